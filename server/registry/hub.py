"""Which files of a Hugging Face repo a pull by repo name means: Ollama's
`hf.co/{org}/{repo}:{quant}`, Mullama's `hf:org/repo[:file]`, Silicon Studio's `org/repo`.

A repo usually holds one GGUF per quantization, and a vision model's projector beside
them (`mmproj-*.gguf`). `pick_gguf` is the pure choice; `repo_files` lists the repo
through huggingface_hub (HF_ENDPOINT and HF_TOKEN apply, as for every hub download).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from modelyard.server.registry import egress
from modelyard.server.registry.errors import FetchError

# When no quantization is named: the first of these the repo has, as Ollama picks Q4_K_M
# for `hf.co/org/repo`: the usual balance of size and quality.
PREFERENCE = ("Q4_K_M", "Q4_K_S", "Q4_0", "Q5_K_M", "Q5_0", "Q6_K", "Q8_0", "F16", "BF16", "F32")


@dataclass(frozen=True)
class RepoFile:
    path: str
    size: int | None = None


@dataclass(frozen=True)
class Choice:
    model: RepoFile
    mmproj: RepoFile | None = None


def _is_projector(path: str) -> bool:
    return "mmproj" in path.rsplit("/", 1)[-1].lower()


def _has_quant(path: str, quant: str) -> bool:
    """Whether a file name carries `quant` as a whole word (Q4_K_M is not Q4_K_M_L)."""
    stem = path.rsplit("/", 1)[-1].lower().removesuffix(".gguf")
    return re.search(rf"(^|[-._]){re.escape(quant.lower())}($|[-._])", stem) is not None


def pick_gguf(files: list[RepoFile], quant: str | None = None) -> Choice:
    """The model file of `quant` (or the preferred quantization) and the repo's projector.

    Raises FetchError (404) naming what the repo has, so the user can pick."""
    ggufs = sorted((f for f in files if f.path.lower().endswith(".gguf")), key=lambda f: f.path)
    models = [f for f in ggufs if not _is_projector(f.path)]
    projectors = [f for f in ggufs if _is_projector(f.path)]
    if not models:
        raise FetchError("The repo has no GGUF model file", code=404)
    wanted = [quant] if quant and quant.lower() != "latest" else list(PREFERENCE)
    chosen = next((f for q in wanted for f in models if _has_quant(f.path, q)), None)
    if chosen is None and (not quant or quant.lower() == "latest"):
        chosen = models[0]
    if chosen is None:
        have = ", ".join(f.path for f in models)
        raise FetchError(f"The repo has no GGUF file of quantization '{quant}'; it has: {have}", code=404)
    # The projector of the same precision as the model when there are several, else the first.
    projector = next((p for p in projectors if any(_has_quant(p.path, q) for q in ("F16", "BF16"))),
                     projectors[0] if projectors else None)
    return Choice(chosen, projector)


def pick_file(files: list[RepoFile], filename: str) -> Choice:
    """The named GGUF of the repo (Mullama's `hf:org/repo:file`) and the repo's projector.

    Raises FetchError (404) naming the GGUF files the repo has."""
    named = [f for f in files if f.path == filename or f.path.rsplit("/", 1)[-1] == filename]
    if not named:
        have = ", ".join(f.path for f in files if f.path.lower().endswith(".gguf")) or "no GGUF file"
        raise FetchError(f"The repo has no file '{filename}'; it has: {have}", code=404)
    if _is_projector(named[0].path):
        raise FetchError(f"'{filename}' is a vision projector, not a model file", code=400)
    return pick_gguf(named[:1] + [f for f in files if _is_projector(f.path)], None)


def repo_files(repo_id: str, revision: str = "main") -> list[RepoFile]:
    """Every file of a model repo on the hub, with sizes. Raises FetchError."""
    import httpx2  # huggingface_hub's HTTP client
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError
    from huggingface_hub.hf_api import RepoFile as HubFile

    try:
        api = HfApi(token=os.environ.get("HF_TOKEN") or None)
        tree = api.list_repo_tree(repo_id, revision=revision, recursive=True)
        return [RepoFile(f.path, f.size) for f in tree if isinstance(f, HubFile)]
    except HfHubHTTPError as exc:
        error = http_error(f"Listing Hugging Face repo '{repo_id}'", exc)
        error.code = 404 if error.code in (401, 404) else 502
        raise error from None
    except HFValidationError as exc:
        raise FetchError(f"Invalid Hugging Face repo '{repo_id}': {exc}", code=400) from None
    except FetchError:
        raise  # the egress policy refused the hub's address
    except (httpx2.HTTPError, OSError) as exc:
        raise FetchError(f"Listing Hugging Face repo '{repo_id}' failed: the hub at {host()} "
                         f"cannot be reached ({type(exc).__name__})") from None


def host() -> str:
    """The hub's host (HF_ENDPOINT's, or huggingface.co's)."""
    from huggingface_hub import constants

    return urlsplit(constants.ENDPOINT).netloc


def http_error(doing: str, exc) -> FetchError:
    """A FetchError for huggingface_hub's HfHubHTTPError: the status, content type and size of
    the hub's answer, never its text (which would echo whatever the address sent back)."""
    resp = getattr(exc, "response", None)
    status = resp.status_code if resp is not None else 502
    shown = f"{status}, {egress.describe(resp)}" if resp is not None else "no answer"
    return FetchError(f"{doing} failed: the hub at {host()} answered {shown}",
                      code=status if 400 <= status < 500 else 502)
