"""Every environment variable convertkit reads, or sets for itself and the frameworks it
runs, lives here. (A toolchain step sets its own toolkit's variables, e.g. tpu-mlir's
envsetup in toolchain_steps/sophgo.py: it runs in another environment, on another
Python, and imports nothing of convertkit but its errors.)"""

from __future__ import annotations

import os
from pathlib import Path

# --timeout and --memory-mb defaults (options.py; batch jobs: timeout_s, memory_mb). Here,
# in a module of the standard library alone, because isolation.py reads them too, and
# isolation.py runs inside toolchain environments on older Pythons (tpu-mlir: 3.10) that
# cannot import options.py (spec.py's enum.StrEnum is 3.11).
DEFAULT_TIMEOUT_S = 1800.0  # the run's deadline
DEFAULT_MEMORY_MB = 8192  # what each child may allocate

# Set in every child process that runs a framework step.
CHILD_ENVIRONMENT: dict[str, str] = {
    # polygraphy (pulled in by paddle2onnx) pip-installs missing packages unless told not to.
    "POLYGRAPHY_AUTOINSTALL_DEPS": "0",
    # TensorFlow's oneDNN and CUDA-not-found banners.
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "TF_ENABLE_ONEDNN_OPTS": "0",
    # Paddle's glog lines. (Not GLOG_v: 0 is already Paddle's default, and MindSpore reads
    # GLOG_v=0 as DEBUG.)
    "GLOG_minloglevel": "2",
    # Never reach for a model hub from a child process.
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "PYTHONWARNINGS": "ignore",
}


def child_environment() -> dict[str, str]:
    """The environment for a child process: the user's, plus convertkit's quiet settings."""
    env = dict(os.environ)
    env.update(CHILD_ENVIRONMENT)
    return env


# Where `convertkit toolchains install` puts NPU toolchain environments (default: the
# user's cache folder, ~/.cache/convertkit/toolchains).
TOOLCHAINS_DIR_VARIABLE = "CONVERTKIT_TOOLCHAINS_DIR"


def toolchains_dir() -> Path:
    """Where toolchain environments live: $CONVERTKIT_TOOLCHAINS_DIR, else the user's
    cache ($XDG_CACHE_HOME or ~/.cache)."""
    configured = os.environ.get(TOOLCHAINS_DIR_VARIABLE)
    if configured:
        return Path(configured).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "convertkit" / "toolchains"


def install_environment() -> dict[str, str]:
    """The environment pip and the probe run in while a toolchain environment is built:
    the user's, without what would point them at the main environment."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def step_environment(root: Path) -> dict[str, str]:
    """What a toolchain step's child sets over the child environment: that toolchain's
    environment only, no user site-packages, no PYTHONPATH of the main environment."""
    return {"PYTHONPATH": "", "PYTHONNOUSERSITE": "1", "VIRTUAL_ENV": str(root)}


# MindSpore reads glog's GLOG_v with 0 meaning DEBUG (a GLOG_v=0 left for Paddle floods
# the log and slows graph compilation several-fold): warnings and up, set in the
# MindSpore child only, before MindSpore is imported.
MINDSPORE_ENVIRONMENT = {"GLOG_v": "2"}


def quiet_mindspore() -> None:
    os.environ.update(MINDSPORE_ENVIRONMENT)


def is_debug() -> bool:
    """CONVERTKIT_DEBUG=1 has the same effect as --debug."""
    return os.environ.get("CONVERTKIT_DEBUG", "") not in ("", "0")


# Thread-pool sizes of the math libraries the frameworks use, set per batch job so that
# parallel jobs share the cores instead of each taking all of them.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def job_environment(threads: int | None) -> dict[str, str]:
    """The environment of one batch job: the child environment, with its math threads
    limited to ``threads`` when given."""
    env = child_environment()
    if threads is not None:
        env.update(dict.fromkeys(THREAD_VARIABLES, str(threads)))
    return env


# Ray's token authentication (Ray 2.60). `ray start --head` turns it on when a token is
# at hand (ray/scripts/scripts.py, maybe_enable_token_auth_if_token_available), and the
# cluster then refuses every node and client without that token (InvalidAuthToken). A
# client given an address turns it on only when RAY_AUTH_MODE=token is set: Ray looks for
# a token by itself only for a cluster it finds without an address (ray/_private/worker.py).
# Ray reads the token from $RAY_AUTH_TOKEN, else the file $RAY_AUTH_TOKEN_PATH, else
# ~/.ray/auth_token (where `ray get-auth-token --generate` writes it), in that order.
RAY_AUTH_MODE_VARIABLE = "RAY_AUTH_MODE"
RAY_AUTH_TOKEN_VARIABLE = "RAY_AUTH_TOKEN"
RAY_AUTH_TOKEN_PATH_VARIABLE = "RAY_AUTH_TOKEN_PATH"


def ray_auth_mode() -> str | None:
    """$RAY_AUTH_MODE as set (`token` or `disabled`), or None when it is not set."""
    return os.environ.get(RAY_AUTH_MODE_VARIABLE)


def ray_auth_token_source() -> str | None:
    """Where Ray will read its authentication token from, or None when it has none."""
    if os.environ.get(RAY_AUTH_TOKEN_VARIABLE):
        return f"${RAY_AUTH_TOKEN_VARIABLE}"
    path = os.environ.get(RAY_AUTH_TOKEN_PATH_VARIABLE)
    if path:
        return f"${RAY_AUTH_TOKEN_PATH_VARIABLE} ({path})"
    default = Path.home() / ".ray" / "auth_token"
    return str(default) if default.is_file() else None


def enable_ray_token_auth() -> bool:
    """Set RAY_AUTH_MODE=token for a Ray client that connects by address, when the user
    left RAY_AUTH_MODE unset and a token is at hand: the rule Ray applies itself to
    `ray start --head` and to a cluster it finds without an address. (A token-mode client
    also connects to a cluster without authentication.) Returns whether it set it; Ray
    reads the variable when it is imported, so the caller refreshes Ray's config."""
    if ray_auth_mode() is not None or ray_auth_token_source() is None:
        return False
    os.environ[RAY_AUTH_MODE_VARIABLE] = "token"
    return True
