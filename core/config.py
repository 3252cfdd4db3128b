"""A session's settings (SessionConfig), the errors a session raises, and the price snapshot of its models."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .baselines import SEED_PROMPT
from .checks import CheckError, check_session_values, check_settings
from .gate import POLICIES
from .llm import LLMError, parse_spec, price_for
from .meta_prompts import TEMPLATE_VERSION
from .protegi import PRESETS as PROTEGI_PRESETS, QUICK_V1 as PROTEGI_QUICK_V1, ProtegiConfig
from .textgrad import LEGACY_PRESETS as TEXTGRAD_LEGACY, PRESETS as TEXTGRAD_PRESETS, QUICK_V1 as TEXTGRAD_QUICK_V1, \
    TextGradConfig

METHODS = ("protegi", "textgrad")
PRESETS = {"protegi": PROTEGI_PRESETS, "textgrad": TEXTGRAD_PRESETS}
# Version 2 made "quick" quick (about 20 calls before validation, 24 validation questions); a session recorded
# before it (no preset_version) runs the presets as they were, so it replays identically.
PRESET_VERSION = 2
OLD_PRESETS = {1: {"protegi": {"quick": PROTEGI_QUICK_V1}, "textgrad": {"quick": TEXTGRAD_QUICK_V1}}}


def on_this_network(url: str | None) -> bool:
    """A base URL on this machine or a private network (a local server), not a paid provider's."""
    import ipaddress
    from urllib.parse import urlparse

    host = (urlparse(url or "").hostname or "").lower()
    if host == "localhost" or host.endswith(".local"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private


class SessionError(RuntimeError):
    """A session that cannot be opened or advanced; the message is for the user."""


class SessionLocked(SessionError):
    pass


class BudgetExceeded(SessionError):
    pass


class UnpricedBudget(SessionError):
    """A USD budget with a model whose price is unknown: its calls would count as $0, so it could never stop."""

    def __init__(self, specs: list[str]):
        self.specs = specs
        names = ", ".join(specs)
        model = specs[0].partition(":")[2].partition(" @ ")[0] if specs else "model"
        super().__init__(f"No price is known for {names}, so a USD budget cannot be kept: set its price (USD per 1M "
                         f"tokens; pgs: PGS_PRICES='{{\"{model}\": [input, output]}}', the app: Settings, Prices) "
                         f"or drop the USD budget.")


def price_key(spec: str, base_url: str | None) -> str:
    """How a model is named in a config's price snapshot: its spec, and its server when one is set."""
    return f"{spec} @ {base_url}" if base_url else spec


@dataclass
class SessionConfig:
    task: dict  # {"name": "pubmedqa", "seed": 0, "val_size": 50} or {"file": "data.csv", "input_cols": [...], ...}
    method: str = "textgrad"
    preset: str = "AutoMedPrompt paper"
    forward: str = "openai:gpt-4o-mini"
    backward: str = "openai:gpt-4o"
    forward_base_url: str | None = None
    backward_base_url: str | None = None
    seed_prompt: str = SEED_PROMPT
    seed: int = 0
    policy: str = "strict"
    alpha: float = 0.05
    patience: int = 3
    budget_usd: float | None = None
    budget_calls: int | None = None
    val_limit: int | None = None  # validate on the first N validation questions
    gate_batch: int = 50  # adaptive gate: validation questions per look
    gate_cap: int = 200  # adaptive gate: at most this many validation questions per gate
    forward_max_tokens: int = 512
    params: dict = field(default_factory=dict)  # overrides of the preset's fields
    templates: dict = field(default_factory=dict)  # meta-prompt overrides {name: {"system","user"}}
    title: str = ""
    # meta-prompt templates and paper presets this session runs with; a config recorded without it is version 1
    template_version: int = TEMPLATE_VERSION
    preset_version: int = PRESET_VERSION  # the preset tables this session runs with; recorded without it: 1
    # validate a proposal's candidates in the background while the person reads them; None: only when the
    # forward model is on a local server (its calls cost nothing), off for paid providers
    validate_ahead: bool | None = None
    # USD per 1M tokens [input, output] by price_key(spec, base_url), fixed when the session is created or
    # re-pointed; a model missing here (a log from before snapshots) is priced by the table
    prices: dict = field(default_factory=dict)

    @staticmethod
    def from_json(d: dict) -> "SessionConfig":
        """A recorded config (event log, bundle): one written before template versions is version 1."""
        return SessionConfig(**{"template_version": 1, "preset_version": 1, **d})

    def model_price(self, spec: str, base_url: str | None, overrides: dict | None = None) -> tuple[float, float] | None:
        """USD per 1M tokens (input, output) for a model of this config: the snapshot, else the table (with
        `overrides` by model name); None when unknown or the provider is missing here."""
        snap = self.prices.get(price_key(spec, base_url)) if isinstance(self.prices, dict) else None
        if snap is not None:
            return (float(snap[0]), float(snap[1]))
        try:
            return price_for(parse_spec(spec, base_url), overrides)
        except LLMError:
            return None

    def validates_ahead(self) -> bool:
        """Whether the app validates candidates before the decision: the setting, else local servers only."""
        if self.validate_ahead is not None:
            return bool(self.validate_ahead)
        try:
            spec = parse_spec(self.forward, self.forward_base_url)
        except LLMError:
            return False
        return spec.is_local or on_this_network(spec.base_url)

    def _models(self) -> list[tuple[str, str | None]]:
        return [(self.forward, self.forward_base_url), (self.backward, self.backward_base_url)]

    def snapshot_prices(self, overrides: dict | None = None) -> dict:
        """The snapshot to record: this config's own prices, plus the table's for its models that have one."""
        out = dict(self.prices)
        for spec, url in self._models():
            price = self.model_price(spec, url, overrides)
            if price is not None:
                out.setdefault(price_key(spec, url), [price[0], price[1]])
        return out

    def unpriced(self, overrides: dict | None = None) -> list[str]:
        """This config's models with no known price (their calls would count as $0)."""
        out: list[str] = []
        for spec, url in self._models():
            if self.model_price(spec, url, overrides) is None and price_key(spec, url) not in out:
                out.append(price_key(spec, url))
        return out

    def check_budget_priced(self, overrides: dict | None = None) -> None:
        """A USD budget needs every model priced; raises UnpricedBudget before any call otherwise."""
        missing = self.unpriced(overrides) if self.budget_usd is not None else []
        if missing:
            raise UnpricedBudget(missing)

    def check(self, check_models: bool = True) -> None:
        """Refuse settings out of range with one clear line (SessionError); `check_models` also parses the specs."""
        if self.method not in METHODS:
            raise SessionError(f"Unknown method '{self.method}'. Use one of: {', '.join(METHODS)}.")
        if self.preset not in PRESETS[self.method]:
            raise SessionError(f"Unknown preset '{self.preset}' for {self.method}. "
                               f"Presets: {', '.join(PRESETS[self.method])}.")
        if self.preset_version not in (1, PRESET_VERSION):
            raise SessionError(f"Unknown preset version {self.preset_version!r} (this app knows 1 and "
                               f"{PRESET_VERSION}).")
        if self.template_version not in (1, TEMPLATE_VERSION):
            raise SessionError(f"Unknown template version {self.template_version!r} (this app knows 1 and "
                               f"{TEMPLATE_VERSION}).")
        if self.policy not in POLICIES:
            raise SessionError(f"Unknown policy '{self.policy}'. Use one of: {', '.join(POLICIES)}.")
        try:
            check_session_values(self)
        except CheckError as exc:
            raise SessionError(str(exc)) from None
        if not (isinstance(self.gate_batch, int) and isinstance(self.gate_cap, int) and 1 <= self.gate_batch
                <= self.gate_cap <= 100_000):
            raise SessionError(f"The adaptive gate needs 1 <= gate_batch <= gate_cap <= 100000 (got "
                               f"{self.gate_batch!r}, {self.gate_cap!r}).")
        if not (isinstance(self.prices, dict) and all(
                isinstance(k, str) and isinstance(v, (list, tuple)) and len(v) == 2 and all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x < float("inf") for x in v)
                for k, v in self.prices.items())):
            raise SessionError("The session's prices must map model specs to [input, output] USD per 1M tokens.")
        if not self.seed_prompt.strip():
            raise SessionError("The seed prompt is empty: write one (the AutoMedPrompt seed is a good start).")
        for spec, url in ((self.forward, self.forward_base_url), (self.backward, self.backward_base_url)):
            if not check_models:
                break
            try:
                parse_spec(spec, url)
            except LLMError as exc:
                raise SessionError(str(exc)) from None
        fields = (ProtegiConfig if self.method == "protegi" else TextGradConfig).__dataclass_fields__
        bad = [k for k in self.params if k not in fields]
        if bad:
            raise SessionError(f"Unknown {self.method} settings: {', '.join(bad)}.")
        try:
            check_settings(ProtegiConfig if self.method == "protegi" else TextGradConfig, self.params)
        except CheckError as exc:
            raise SessionError(str(exc)) from None

    def engine_config(self) -> ProtegiConfig | TextGradConfig:
        """The preset of this config's template version with its `params` overrides."""
        base = OLD_PRESETS.get(self.preset_version, {}).get(self.method, {}).get(self.preset) or \
            PRESETS[self.method][self.preset]
        if self.method == "textgrad":
            base = TEXTGRAD_LEGACY.get(self.template_version, {}).get(self.preset, base).for_task(self.task.get("name"))
        return type(base)(**{**asdict(base), **self.params})


DEFAULT_PRESET = "recommended"  # what a new session starts with, for either method (the paper presets stay faithful)


def default_policy(preset: str) -> str:
    """The gate policy a new session starts with: adaptive for the "recommended" presets, else strict."""
    return "adaptive" if preset == "recommended" else "strict"
