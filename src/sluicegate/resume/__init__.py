"""Resumable streams: an event log in the shared state, read back on any instance.

``service.Resumer`` is the entry point (start, resume, cancel); ``log`` has the framing and key
layout, ``sink`` the relay's writer into the log, ``producer`` the task that generates a stream
apart from its client, ``takeover`` the continuation of a stream whose instance died.
"""
