"""The model format: a folder (or one file) of safetensors weights plus a JSON config.

A model folder holds `model.safetensors`, `config.json` (a `ModelConfig`) and usually a
`MODEL_CARD.md`. The config is also stored in the safetensors header, so the weights file
alone is a complete model. Models resolve from a bundled name, a local path, or
`hf://owner/name[@revision]` through huggingface_hub's cache (offline when it is populated).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import stat
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError

from fakescope.errors import ConfigError, ModelLoadError, StorageError, UnknownModelError
from fakescope.models.config import ModelConfig
from fakescope.models.registry import create_model

if TYPE_CHECKING:  # torch only where a network is built or saved: `models info`, resolving and pushing need none
    import torch
    from torch import nn

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "MODEL_CARD.md"
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_MODEL = "fakescope-default"
_HEADER_KEY = "fakescope_config"


@dataclass(frozen=True)
class LoadedModel:
    """A network with its config and where it came from.

    A model read by `load_model` builds its network on first use of `network` (importing timm and
    reading the weights take seconds), so a run that only needs the cached ONNX export of it
    never builds it. `weights` is then the safetensors file the network comes from.
    """

    _network: nn.Module | None
    config: ModelConfig
    location: str
    weights: Path | None = None
    device: str = "cpu"

    @property
    def network(self) -> nn.Module:
        if self._network is None:
            object.__setattr__(self, "_network", _build(self.config, self.weights, self.device))
        return self._network

    @property
    def built(self) -> bool:
        """Whether the network exists yet (see the class note)."""
        return self._network is not None

    def __repr__(self) -> str:
        return (f"LoadedModel({self.config.name!r}, architecture={self.config.architecture!r}, "
                f"location={self.location!r}, device='{self.device}', built={self.built})")

    def with_network(self, network: nn.Module) -> LoadedModel:
        """The same model running another network (an ONNX export of it, for instance)."""
        return replace(self, _network=network)


def bundled_models() -> list[str]:
    """Names of the models shipped inside the package."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / WEIGHTS_FILE).is_file())


def save_model(network: nn.Module, config: ModelConfig, folder: str | Path, card: str | None = None) -> ModelConfig:
    """Write weights, config (with the weights' sha256) and an optional card; return the saved config."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    weights = folder / WEIGHTS_FILE
    save_file(state, weights, metadata={_HEADER_KEY: json.dumps(replace(config, weights_sha256=None).to_dict())})
    config = replace(config, weights_sha256=_sha256(weights))
    config.save(folder / CONFIG_FILE)
    weights.chmod(stat.S_IMODE((folder / CONFIG_FILE).stat().st_mode))  # safetensors writes 0600: as readable as the config
    if card is not None:
        (folder / CARD_FILE).write_text(card)
    return config


def load_model(name_or_path: str | os.PathLike | None = None, device: str | torch.device = "cpu", *,
               lazy: bool = False, progress: bool | None = None) -> LoadedModel:
    """Resolve and load a model in eval mode on `device`.

    `lazy=True` reads only its config now and builds the network on first use (`LoadedModel`), so
    weights that do not fit their architecture raise only then. `progress`: as `resolve_model`'s.

    Raises:
        UnknownModelError: a bare name that is neither bundled nor a path.
        ModelLoadError: a path or hub repo that exists but holds no loadable model.
    """
    location = resolve_model(name_or_path, progress=progress)
    weights, config = _read_folder_or_file(location)
    model = LoadedModel(None, config, str(location), weights=weights, device=str(device))
    if not lazy:
        model.network  # noqa: B018 - built now, so a bad file fails here
    return model


def check_weights(weights: Path, config: ModelConfig) -> None:
    """Raise `ModelLoadError` if the file's sha256 is not the `weights_sha256` its config records (when it records one)."""
    if config.weights_sha256 and _sha256(weights) != config.weights_sha256:
        raise ModelLoadError(f"{weights}: sha256 differs from the weights_sha256 in its {CONFIG_FILE}"
                             " (a corrupted or replaced file; download or save the model again)")


def _build(config: ModelConfig, weights: Path | None, device: str) -> nn.Module:
    from safetensors.torch import load_file

    check_weights(weights, config)
    try:
        network = create_model(config.architecture, **config.architecture_kwargs)
    except TypeError as exc:  # kwargs the builder does not take (renamed since the model was saved, say)
        raise ModelLoadError(f"{weights}: cannot build {config.architecture} with architecture_kwargs "
                             f"{config.architecture_kwargs} ({exc})") from None
    try:
        state = load_file(weights)
    except (SafetensorError, OSError) as exc:
        raise ModelLoadError(f"{weights}: not a readable safetensors file ({str(exc).splitlines()[0]})") from None
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"{weights}: weights do not fit {config.architecture}: {str(exc).splitlines()[0]}") from None
    return network.eval().to(device)


def resolve_model(name_or_path: str | os.PathLike | None, *, progress: bool | None = None) -> Path:
    """Turn a bundled name, a local path or an hf:// reference into a local folder or file.

    `progress`: show the Hub download's progress bars on stderr (default: when stderr is a terminal).
    """
    name = str(name_or_path) if name_or_path is not None else DEFAULT_MODEL
    if name.startswith("hf://"):
        return _download_hub(name[len("hf://"):], sys.stderr.isatty() if progress is None else progress)
    if (BUNDLED_DIR / name / WEIGHTS_FILE).is_file():
        return BUNDLED_DIR / name
    path = Path(name).expanduser()
    if path.exists():
        return path
    if os.sep in name or name.endswith(".safetensors"):
        raise ModelLoadError(f"model path not found: {name}")
    from fakescope.models.zoo import BUILTIN

    untrained = name in {info.name for info in BUILTIN}
    raise UnknownModelError(name, bundled_models(), hint=(
        f" ({name} is an architecture, not a trained model: train one with fakescope train and give the model "
        "folder it saves)") if untrained else "")


def push_model(folder: str | Path, repo_id: str, *, token: str | None = None, private: bool = False) -> str:
    """Upload a model (a folder, a safetensors file or a bundled name) to the Hugging Face Hub.

    The folder's card becomes the repo's README.md. Weights, config and card go up in one commit, so
    the repo never holds new weights beside an old config. Returns the repo URL.

    Raises:
        ConfigError: `repo_id` is no Hub repo id (checked before anything is read or sent), or no token is set
            (checked before anything is sent).
        UnknownModelError, ModelLoadError: no such model, or the folder holds no loadable model.
        StorageError: the Hub refused the upload or could not be reached.
    """
    from huggingface_hub import CommitOperationAdd, HfApi, get_token
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    from fakescope.io.storage import load_env_file

    try:
        validate_repo_id(repo_id)
    except HFValidationError:  # its message names an argument (repo_type) the command line has not
        raise ConfigError(f"{repo_id!r} is not a Hub repo: give owner/name (letters, digits, '-', '_' and '.', "
                          "neither starting nor ending with '-' or '.')") from None
    load_env_file()  # HF_TOKEN may live in .env
    folder = resolve_model(folder)
    weights, config = _read_folder_or_file(folder)
    card = folder / CARD_FILE
    readme = card.read_text() if card.is_file() else f"# {config.name}\n\nA fakescope detector ({config.architecture}).\n"
    front = f"---\nlicense: {config.license.lower()}\nlibrary_name: fakescope\ntags: [ai-image-detection, fakescope]\n---\n"
    token = token or os.environ.get("HF_TOKEN")
    if not (token or get_token()):  # none in .env, the environment or `hf auth login`'s file: the Hub would refuse
        raise ConfigError("no Hugging Face token: set HF_TOKEN (a token with write access) in the environment or a "
                          ".env file, or run `hf auth login`")
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.create_commit(repo_id, commit_message=f"Upload fakescope model {config.name}", operations=[
            CommitOperationAdd(path_in_repo=WEIGHTS_FILE, path_or_fileobj=weights),
            CommitOperationAdd(path_in_repo=CONFIG_FILE, path_or_fileobj=json.dumps(config.to_dict(), indent=2).encode()),
            CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=(front + readme).encode()),
        ])
    except Exception as exc:  # noqa: BLE001 - HTTP, auth and connection errors come from several libraries
        first_line = str(exc).partition("\n")[0]
        if token and token.strip():  # a malformed token (a pasted newline) is quoted by the HTTP library's error
            first_line = first_line.replace(token.strip(), "<HF_TOKEN>")
        raise StorageError(f"could not push to hf://{repo_id}: {type(exc).__name__}: {first_line}") from None
    return str(url)


def _download_hub(ref: str, progress: bool) -> Path:
    from huggingface_hub import snapshot_download
    from tqdm.auto import tqdm

    from fakescope.io.storage import load_env_file

    load_env_file()  # HF_TOKEN for a private repo may live in .env
    repo_id, _, revision = ref.partition("@")
    bars = None if progress else functools.partial(tqdm, disable=True)  # this call's bars: disable_progress_bars() is global
    try:
        folder = Path(snapshot_download(repo_id, revision=revision or None,
                                        allow_patterns=[WEIGHTS_FILE, CONFIG_FILE, "README.md"], tqdm_class=bars))
    except (OSError, ValueError) as exc:  # the Hub's errors are OSErrors; a malformed repo id is a ValueError
        raise ModelLoadError(f"hf://{ref}: {_hub_failure(exc, repo_id, revision)}") from None
    if not (folder / WEIGHTS_FILE).is_file():
        raise ModelLoadError(f"hf://{ref}: the repo holds no {WEIGHTS_FILE}, so it is no fakescope model")
    return folder


def _hub_failure(exc: Exception, repo_id: str, revision: str) -> str:
    """Why `snapshot_download` failed, in a few words: offline, unreachable, no such repo or revision, a missing file
    or a token the Hub refused."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    access = "a token with access" if os.environ.get("HF_TOKEN") else "HF_TOKEN"
    if isinstance(exc, HFValidationError):
        return "not a Hub repo: give hf://owner/name or hf://owner/name@revision"
    if isinstance(exc, GatedRepoError):
        return f"a gated repo: accept its terms on the Hub and set {access}"
    if isinstance(exc, RepositoryNotFoundError):  # the Hub answers a private repo's unauthorised reader so too
        return f"no such repo on the Hub, or a private one: check the name, or set {access}"
    if isinstance(exc, RevisionNotFoundError):
        return f"{repo_id} has no revision {revision!r} (a branch, tag or commit)"
    if isinstance(exc, RemoteEntryNotFoundError):
        return f"a file of the repo is missing on the Hub ({exc.response.url})"
    if isinstance(exc, HfHubHTTPError) and exc.response.status_code in (401, 403):
        return f"the Hub refused the token ({exc.response.status_code}): it is invalid or has no access to this repo"
    if isinstance(exc, LocalEntryNotFoundError):
        if constants.HF_HUB_OFFLINE:
            return "not in the local cache, and HF_HUB_OFFLINE is set (unset it to download)"
        cause = exc.__cause__
        if isinstance(cause, HfHubHTTPError):
            return f"not in the local cache, and the Hub answered {cause.response.status_code}; try again later"
        return f"not in the local cache, and the Hub ({constants.ENDPOINT}) could not be reached: no network?"
    first_line = str(exc).strip().partition("\n")[0]
    return f"could not download it: {type(exc).__name__}: {first_line}"


def _read_folder_or_file(location: Path) -> tuple[Path, ModelConfig]:
    if location.is_dir():
        weights, config_path = location / WEIGHTS_FILE, location / CONFIG_FILE
        if not weights.is_file():
            raise ModelLoadError(f"{location}: no {WEIGHTS_FILE} inside")
        if config_path.is_file():
            return weights, ModelConfig.load(config_path)
        return weights, _config_from_header(weights)
    return location, _config_from_header(location)


def _config_from_header(weights: Path) -> ModelConfig:
    from safetensors import safe_open

    try:
        with safe_open(weights, framework="numpy") as f:  # the header only: "pt" would import torch
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        if weights.suffix.lower() == ".onnx":  # `fakescope export --onnx`'s file: the safetensors reason says nothing
            raise ModelLoadError(f"{weights}: an ONNX export, not a model: give the model folder or its "
                                 f"{WEIGHTS_FILE} (--runtime onnx exports and caches the network itself)") from None
        raise ModelLoadError(f"{weights}: not a safetensors file ({exc})") from None
    if _HEADER_KEY not in meta:
        raise ModelLoadError(f"{weights}: no fakescope config in the file and no {CONFIG_FILE} beside it")
    try:
        return ModelConfig.from_dict(json.loads(meta[_HEADER_KEY]))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{weights}: the fakescope config in its header is not valid JSON ({exc})") from None
    except ConfigError as exc:
        raise ConfigError(f"{weights}: {exc}") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
