"""Every environment variable convertkit reads or sets lives here."""

from __future__ import annotations

import os

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
