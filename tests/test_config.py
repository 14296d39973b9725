"""Configuration loading (YAML file + environment overrides) and model resolution (Router).

Router construction only builds providers and lazily-loading engines, so nothing here loads a
model or opens a connection.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from sluicegate.config import (
    EMBEDDED_ALIAS,
    EMBEDDED_MODEL,
    ConfigError,
    DeploymentConfig,
    GatewayConfig,
    load_config,
)
from sluicegate.errors import ModelNotFoundError
from sluicegate.router import Router

FULL_YAML = """\
server:
  host: 0.0.0.0
  port: 9123
  api_key: sk-file
  max_body_bytes: 65536
local:
  preload: false
  max_queue: 3
  n_ctx: 1024
  n_threads: 2
embedded_model: true
models:
  - name: "mock/*"
    provider: openai
    base_url: http://127.0.0.1:9000/v1
    api_key_env: MOCK_API_KEY
  - name: "mock/special/*"
    provider: openai
    base_url: http://127.0.0.1:9001/v1
    model: special-upstream
    headers:
      X-Team: blue
  - name: mock/exact
    provider: openai
    base_url: http://127.0.0.1:9002/v1
  - name: fixed
    provider: openai
    base_url: http://127.0.0.1:9003/v1
    model: upstream-fixed
  - name: local/my-model
    provider: local
    model_path: /models/does-not-exist.gguf
aliases:
  fast: fixed
  exact: mock/exact
  mine: local/my-model
"""


def write(tmp_path: Path, text: str, name: str = "sluicegate.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def full_config(tmp_path: Path) -> GatewayConfig:
    return load_config(write(tmp_path, FULL_YAML), env={})


@pytest.fixture(autouse=True)
def mock_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOCK_API_KEY", "sk-mock")  # the file's deployments need their key


@pytest.fixture
def router(full_config: GatewayConfig) -> Router:
    return Router(full_config)


def deployment(name: str, **kw: str) -> DeploymentConfig:
    return DeploymentConfig(name=name, provider="openai",
                            base_url=kw.pop("base_url", "http://127.0.0.1:1/v1"), **kw)


# -- load_config: the file -------------------------------------------------------------------


def test_full_file_is_parsed(full_config: GatewayConfig) -> None:
    c = full_config
    assert (c.server.host, c.server.port, c.server.api_key, c.server.max_body_bytes) == (
        "0.0.0.0", 9123, "sk-file", 65536)
    assert (c.local.preload, c.local.max_queue, c.local.n_ctx, c.local.n_threads) == (
        False, 3, 1024, 2)
    assert c.embedded_model is True
    names = [d.name for d in c.models]
    assert names == ["mock/*", "mock/special/*", "mock/exact", "fixed", "local/my-model"]
    by_name = {d.name: d for d in c.models}
    assert by_name["mock/*"].is_pattern and not by_name["mock/exact"].is_pattern
    assert by_name["mock/*"].api_key_env == "MOCK_API_KEY"
    assert by_name["mock/*"].model is None
    assert by_name["mock/special/*"].model == "special-upstream"
    assert by_name["mock/special/*"].headers == {"X-Team": "blue"}
    assert by_name["fixed"].base_url == "http://127.0.0.1:9003/v1"
    assert by_name["local/my-model"].provider == "local"
    assert by_name["local/my-model"].model_path == "/models/does-not-exist.gguf"
    assert c.aliases == {"fast": "fixed", "exact": "mock/exact", "mine": "local/my-model"}


def test_defaults_without_a_file() -> None:
    c = load_config(env={})
    assert c == GatewayConfig()
    assert (c.server.host, c.server.port, c.server.api_key) == ("127.0.0.1", 8400, None)
    assert c.server.max_body_bytes == 4 * 1024 * 1024
    assert c.local.preload is True
    assert c.embedded_model is True
    assert c.models == [] and c.aliases == {}


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_file_gives_defaults(tmp_path: Path, text: str) -> None:
    assert load_config(write(tmp_path, text), env={}) == GatewayConfig()


def test_path_may_be_a_string(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  port: 7001\n")
    assert load_config(str(path), env={}).server.port == 7001


# -- load_config: environment ----------------------------------------------------------------


def test_env_overrides_win_over_the_file(tmp_path: Path) -> None:
    env = {
        "SLUICEGATE_HOST": "127.0.0.2",
        "SLUICEGATE_PORT": "9999",
        "SLUICEGATE_API_KEY": "sk-env",
        "SLUICEGATE_MAX_BODY_BYTES": "4096",
        "SLUICEGATE_PRELOAD": "true",
        "SLUICEGATE_MAX_QUEUE": "0",
        "SLUICEGATE_N_CTX": "512",
        "SLUICEGATE_N_THREADS": "7",
    }
    c = load_config(write(tmp_path, FULL_YAML), env=env)
    assert (c.server.host, c.server.port, c.server.api_key, c.server.max_body_bytes) == (
        "127.0.0.2", 9999, "sk-env", 4096)
    assert (c.local.preload, c.local.max_queue, c.local.n_ctx, c.local.n_threads) == (
        True, 0, 512, 7)
    # What the environment does not touch still comes from the file.
    assert len(c.models) == 5 and c.aliases["fast"] == "fixed"


def test_env_overrides_only_what_it_names(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, FULL_YAML), env={"SLUICEGATE_PORT": "8001"})
    assert c.server.port == 8001
    assert (c.server.host, c.server.api_key, c.server.max_body_bytes) == (
        "0.0.0.0", "sk-file", 65536)
    assert c.local.preload is False


def test_env_overrides_without_a_file() -> None:
    c = load_config(env={"SLUICEGATE_PORT": "0", "SLUICEGATE_PRELOAD": "false"})
    assert c.server.port == 0
    assert c.local.preload is False


def test_state_settings_from_the_file_and_the_environment(tmp_path: Path) -> None:
    assert load_config(env={}).state.backend == "memory"
    path = write(tmp_path, "state:\n  backend: redis\n  url: redis://10.0.0.5:6379/1\n"
                 "  max_connections: 8\n  pool_timeout_s: 2\n")
    c = load_config(path, env={})
    assert (c.state.backend, c.state.url, c.state.max_connections, c.state.pool_timeout_s) == (
        "redis", "redis://10.0.0.5:6379/1", 8, 2.0)
    c = load_config(env={"SLUICEGATE_REDIS_URL": "redis://h:1/0"})  # a url implies redis
    assert (c.state.backend, c.state.url) == ("redis", "redis://h:1/0")
    c = load_config(path, env={"SLUICEGATE_STATE_BACKEND": "memory"})
    assert c.state.backend == "memory"


def test_state_settings_errors_name_the_fix_and_hide_the_password() -> None:
    with pytest.raises(ConfigError, match=r"state.backend redis needs state.url"):
        load_config(env={"SLUICEGATE_STATE_BACKEND": "redis"})
    with pytest.raises(ConfigError, match=r"must start with redis://") as caught:
        load_config(env={"SLUICEGATE_REDIS_URL": "http://user:pw-in-url@h:1"})
    assert "pw-in-url" not in str(caught.value) and "user:***@h:1" in str(caught.value)
    with pytest.raises(ConfigError):
        load_config(env={"SLUICEGATE_STATE_BACKEND": "sqlite"})
    assert "pw-in-url" not in repr(load_config(env={"SLUICEGATE_REDIS_URL":
                                                    "redis://user:pw-in-url@h:1"}))


def test_empty_env_values_are_ignored(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, FULL_YAML),
                    env={"SLUICEGATE_PORT": "", "SLUICEGATE_API_KEY": ""})
    assert c.server.port == 9123
    assert c.server.api_key == "sk-file"


@pytest.mark.parametrize(("raw", "expected"), [("0", False), ("no", False), ("false", False),
                                               ("1", True), ("yes", True), ("True", True)])
def test_env_preload_parses_booleans(raw: str, expected: bool) -> None:
    assert load_config(env={"SLUICEGATE_PRELOAD": raw}).local.preload is expected


def test_unrelated_env_is_ignored() -> None:
    c = load_config(env={"SLUICEGATE_NOPE": "1", "PORT": "1", "sluicegate_port": "1"})
    assert c == GatewayConfig()


def test_sluicegate_config_env_selects_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  port: 7002\nembedded_model: false\n")
    c = load_config(env={"SLUICEGATE_CONFIG": str(path)})
    assert c.server.port == 7002
    assert c.embedded_model is False


def test_sluicegate_config_env_and_overrides_together(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  port: 7002\n  host: 10.0.0.1\n")
    c = load_config(env={"SLUICEGATE_CONFIG": str(path), "SLUICEGATE_PORT": "7003"})
    assert (c.server.host, c.server.port) == ("10.0.0.1", 7003)


def test_explicit_path_beats_sluicegate_config(tmp_path: Path) -> None:
    env_file = write(tmp_path, "server:\n  port: 7002\n", "env.yaml")
    arg_file = write(tmp_path, "server:\n  port: 7004\n", "arg.yaml")
    assert load_config(arg_file, env={"SLUICEGATE_CONFIG": str(env_file)}).server.port == 7004


def test_process_environment_is_the_default(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "server:\n  port: 7005\n  host: 10.0.0.2\n")
    for var in ("SLUICEGATE_HOST", "SLUICEGATE_API_KEY", "SLUICEGATE_MAX_BODY_BYTES",
                "SLUICEGATE_PRELOAD", "SLUICEGATE_MAX_QUEUE", "SLUICEGATE_N_CTX",
                "SLUICEGATE_N_THREADS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SLUICEGATE_CONFIG", str(path))
    monkeypatch.setenv("SLUICEGATE_PORT", "7006")
    c = load_config()
    assert (c.server.host, c.server.port) == ("10.0.0.2", 7006)


def test_explicit_env_replaces_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICEGATE_PORT", "7007")
    assert load_config(env={}).server.port == 8400


# -- load_config: errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("server: [unclosed\n", id="invalid-yaml"),
        pytest.param("server:\n  port: 1\n port: 2\n", id="bad-indent"),
        pytest.param("- a\n- b\n", id="top-level-list"),
        pytest.param("just a string\n", id="top-level-scalar"),
        pytest.param("serverr:\n  port: 1\n", id="unknown-top-level-key"),
        pytest.param("server:\n  prot: 1\n", id="unknown-server-key"),
        pytest.param("local:\n  preloaded: true\n", id="unknown-local-key"),
        pytest.param("models:\n  - name: x\n    provider: openai\n    base_url: http://h/v1\n"
                     "    baseurl: http://h/v1\n", id="unknown-model-key"),
        pytest.param("server:\n  port: 70000\n", id="port-too-big"),
        pytest.param("server:\n  port: -1\n", id="port-negative"),
        pytest.param("server:\n  port: eighty\n", id="port-not-int"),
        pytest.param("server:\n  max_body_bytes: 10\n", id="body-limit-too-small"),
        pytest.param("local:\n  n_ctx: 16\n", id="n-ctx-too-small"),
        pytest.param("embedded_model: maybe\n", id="embedded-model-not-bool"),
        pytest.param("models:\n  - name: x\n    provider: nosuch\n", id="unknown-provider"),
        pytest.param("models:\n  - provider: openai\n", id="model-without-name"),
        pytest.param("models:\n  - name: ''\n    provider: openai\n", id="empty-model-name"),
        pytest.param("models: {name: x}\n", id="models-not-a-list"),
        pytest.param("aliases: [a, b]\n", id="aliases-not-a-mapping"),
    ],
)
def test_invalid_file_raises_config_error(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError):
        load_config(path, env={})


@pytest.mark.parametrize(
    "env",
    [{"SLUICEGATE_PORT": "eighty"}, {"SLUICEGATE_PORT": "65536"},
     {"SLUICEGATE_MAX_BODY_BYTES": "1k"}, {"SLUICEGATE_PRELOAD": "perhaps"},
     {"SLUICEGATE_N_THREADS": "0"}],
)
def test_invalid_env_raises_config_error(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        load_config(env=env)


def test_missing_file_raises_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        load_config(missing, env={})
    with pytest.raises(ConfigError):
        load_config(env={"SLUICEGATE_CONFIG": str(missing)})


def test_directory_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_config(tmp_path, env={})


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_non_utf8_file_raises_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("server:\n  host: café\n".encode("latin-1"))
    with pytest.raises(ConfigError):
        load_config(path, env={})


def test_empty_section_with_env_override(tmp_path: Path) -> None:
    """``server:`` with nothing under it is None in YAML; an env override must not crash."""
    path = write(tmp_path, "server:\n")
    c = load_config(path, env={"SLUICEGATE_PORT": "9001"})
    assert c.server.port == 9001
    assert load_config(path, env={}).server.port == 8400  # an empty section means defaults


@pytest.mark.parametrize("section", ["server: [1, 2]\n", "server: oops\n", "local: 3\n"])
def test_invalid_section_is_rejected_even_with_env_override(tmp_path: Path,
                                                            section: str) -> None:
    path = write(tmp_path, section)
    with pytest.raises(ConfigError):
        load_config(path, env={})  # rejected without overrides...
    with pytest.raises(ConfigError):
        load_config(path, env={"SLUICEGATE_PORT": "9001", "SLUICEGATE_N_CTX": "512"})


# -- Router: resolution ----------------------------------------------------------------------


def test_alias_resolves_to_its_target(router: Router) -> None:
    target = router.resolve("fast")
    assert target.requested == "fast"
    assert target.upstream_model == "upstream-fixed"
    assert target.provider is router.resolve("fixed").provider
    assert target.provider.name == "fixed"


def test_alias_to_exact_name_without_model(router: Router) -> None:
    target = router.resolve("exact")
    assert (target.requested, target.upstream_model) == ("exact", "mock/exact")


def test_exact_name_beats_pattern(router: Router) -> None:
    exact = router.resolve("mock/exact")
    assert exact.provider.name == "mock/exact"
    assert exact.upstream_model == "mock/exact"  # no ``model``: the name itself
    assert exact.provider is not router.resolve("mock/other").provider


def test_exact_name_with_model(router: Router) -> None:
    target = router.resolve("fixed")
    assert (target.requested, target.upstream_model) == ("fixed", "upstream-fixed")


def test_pattern_upstream_model_is_the_matched_suffix(router: Router) -> None:
    target = router.resolve("mock/gpt-4o-mini")
    assert target.requested == "mock/gpt-4o-mini"
    assert target.upstream_model == "gpt-4o-mini"
    assert target.provider.name == "mock/*"
    # The suffix may itself contain slashes.
    assert router.resolve("mock/org/model:v1").upstream_model == "org/model:v1"


def test_longest_pattern_prefix_wins(router: Router) -> None:
    special = router.resolve("mock/special/anything")
    assert special.provider.name == "mock/special/*"
    assert special.upstream_model == "special-upstream"  # ``model`` set: it wins over the suffix
    other = router.resolve("mock/specialist")
    assert other.provider.name == "mock/*"
    assert other.upstream_model == "specialist"


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_longest_prefix_wins_whatever_the_order(order: tuple[int, ...]) -> None:
    patterns = [deployment("*"), deployment("a/*"), deployment("a/b/*")]
    router = Router(GatewayConfig(embedded_model=False, models=[patterns[i] for i in order]))
    assert (router.resolve("a/b/c").provider.name, router.resolve("a/b/c").upstream_model) == (
        "a/b/*", "c")
    assert (router.resolve("a/x").provider.name, router.resolve("a/x").upstream_model) == (
        "a/*", "x")
    assert (router.resolve("zzz").provider.name, router.resolve("zzz").upstream_model) == (
        "*", "zzz")
    # "a/b/" matches only shorter prefixes: the "a/b/*" pattern needs a non-empty suffix.
    assert router.resolve("a/b/").provider.name == "a/*"


def test_alias_to_a_pattern_matched_name() -> None:
    config = GatewayConfig(embedded_model=False, models=[deployment("mock/*")],
                           aliases={"fast": "mock/gpt-4o-mini"})
    target = Router(config).resolve("fast")
    assert (target.requested, target.upstream_model) == ("fast", "gpt-4o-mini")
    assert target.provider.name == "mock/*"


@pytest.mark.parametrize("name", ["nope", "mock", "mock/", "Mock/gpt", "FIXED", "", "fast2",
                                  "local/other"])
def test_unknown_model_raises_model_not_found(router: Router, name: str) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        router.resolve(name)
    err = info.value
    assert err.status == 404
    assert err.param == "model"
    assert err.code == "model_not_found"
    assert f"'{name}'" in err.message


def test_alias_to_unknown_target_is_not_found() -> None:
    router = Router(GatewayConfig(embedded_model=False, aliases={"ghost": "nowhere"}))
    with pytest.raises(ModelNotFoundError, match="ghost"):
        router.resolve("ghost")
    assert router.list_models() == []


# -- Router: the embedded model --------------------------------------------------------------


def test_embedded_model_and_default_alias(router: Router) -> None:
    target = router.resolve(EMBEDDED_ALIAS)
    assert target.requested == "default"
    assert target.upstream_model == "gemma-3-270m"
    assert target.provider is router.resolve(EMBEDDED_MODEL).provider
    assert target.provider.name == "local"
    # Engines exist, keyed by model, but nothing is loaded at construction.
    assert set(router.engines) == {EMBEDDED_MODEL, "/models/does-not-exist.gguf"}
    assert not any(engine.loaded for engine in router.engines.values())


def test_local_deployment_with_model_path(router: Router) -> None:
    target = router.resolve("mine")
    assert target.upstream_model == "local/my-model"
    assert target.provider.name == "local"
    assert target.provider is not router.resolve(EMBEDDED_MODEL).provider


def test_local_deployments_share_an_engine_per_path() -> None:
    config = GatewayConfig(embedded_model=False, models=[
        DeploymentConfig(name="one", provider="local", model_path="/m/x.gguf"),
        DeploymentConfig(name="two", provider="local", model_path="/m/x.gguf"),
        DeploymentConfig(name="three", provider="local", model_path="/m/y.gguf"),
    ])
    router = Router(config)
    assert set(router.engines) == {"/m/x.gguf", "/m/y.gguf"}
    assert not any(engine.loaded for engine in router.engines.values())


def test_embedded_model_false_removes_it(tmp_path: Path) -> None:
    text = FULL_YAML.replace("embedded_model: true", "embedded_model: false")
    router = Router(load_config(write(tmp_path, text), env={}))
    for name in (EMBEDDED_MODEL, EMBEDDED_ALIAS):
        with pytest.raises(ModelNotFoundError):
            router.resolve(name)
    assert EMBEDDED_MODEL not in router.engines
    ids = {m["id"] for m in router.list_models()}
    assert EMBEDDED_MODEL not in ids and EMBEDDED_ALIAS not in ids
    assert router.resolve("mock/x").upstream_model == "x"  # the rest is untouched


def test_user_alias_named_default_is_kept() -> None:
    config = GatewayConfig(models=[deployment("fixed", model="up")], aliases={"default": "fixed"})
    router = Router(config)
    assert router.resolve("default").upstream_model == "up"
    assert router.resolve(EMBEDDED_MODEL).provider.name == "local"


def test_router_without_embedded_model_has_no_engines() -> None:
    router = Router(GatewayConfig(embedded_model=False))
    assert router.engines == {}
    assert router.list_models() == []


# -- Router: list_models ---------------------------------------------------------------------


def test_list_models(router: Router) -> None:
    models = router.list_models()
    for entry in models:
        assert set(entry) == {"id", "object", "created", "owned_by"}
        assert entry["object"] == "model"
        assert isinstance(entry["created"], int)
    ids = [m["id"] for m in models]
    assert len(ids) == len(set(ids))
    assert set(ids) == {"mock/exact", "fixed", "local/my-model", EMBEDDED_MODEL,
                        "fast", "exact", "mine", EMBEDDED_ALIAS}
    assert not any("*" in i for i in ids), "patterns are not enumerable"
    owners = {m["id"]: m["owned_by"] for m in models}
    assert owners["fast"] == owners["fixed"] == "fixed"
    assert owners[EMBEDDED_ALIAS] == owners[EMBEDDED_MODEL] == "local"
    assert owners["mine"] == "local"


def test_list_models_includes_alias_to_pattern_matched_name() -> None:
    config = GatewayConfig(embedded_model=False, models=[deployment("mock/*")],
                           aliases={"fast": "mock/gpt-4o-mini"})
    router = Router(config)
    router.resolve("fast")  # it is served...
    listed = {m["id"]: m for m in router.list_models()}  # ...so it is listed
    assert set(listed) == {"fast"}
    assert listed["fast"]["owned_by"] == "mock/*"
