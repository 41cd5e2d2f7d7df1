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
    # Paddle's glog lines.
    "GLOG_minloglevel": "2",
    "GLOG_v": "0",
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


def is_debug() -> bool:
    """CONVERTKIT_DEBUG=1 has the same effect as --debug."""
    return os.environ.get("CONVERTKIT_DEBUG", "") not in ("", "0")
