"""ClearML connection plumbing shared by the tracker and the registry backend.

The SDK reads its own configuration from `CLEARML_*` variables and a config file; this is the one
place that prepares them (offline-friendly defaults) and that checks a server answers before the
SDK's hours of retries start. The SDK itself is imported only inside the functions that need it.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class ClearMLUnavailable(RuntimeError):
    """The ClearML SDK is missing, or the configured server does not answer."""


@dataclass(frozen=True)
class ClearMLConnection:
    """Where the SDK connects: a server (host and credentials) or nothing (offline sessions)."""

    api_host: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    config_file: str | None = None  # the user's own clearml.conf; ours is written when absent
    cache_dir: str | None = None

    @classmethod
    def from_settings(cls, settings) -> ClearMLConnection:
        return cls(
            settings.clearml_api_host,
            settings.clearml_api_access_key,
            settings.clearml_api_secret_key,
            settings.clearml_config_file,
            settings.clearml_cache_dir,
        )

    @property
    def online(self) -> bool:
        return bool(self.api_host and self.access_key and self.secret_key)

    def prepare_sdk(self, cache_dir: Path | str | None = None) -> None:
        """Point the SDK at its cache and a config with no reporter subprocess and few retries.

        The SDK reads only the process environment, so this sets `CLEARML_CACHE_DIR` and
        `CLEARML_CONFIG_FILE` there (only when the user gave no config file of their own).
        """
        cache = cache_dir or self.cache_dir
        if cache:
            os.environ["CLEARML_CACHE_DIR"] = str(cache)
        if not self.config_file:
            # No reporter subprocess (close() is instant instead of ~10 s) and few HTTP retries.
            conf = Path(cache or tempfile.gettempdir()) / f"fer-clearml-{os.getuid()}.conf"
            conf.parent.mkdir(parents=True, exist_ok=True)
            conf.write_text(
                "sdk { development { report_use_subprocess: false } }\n"
                "api { http { retries { total: 2, connect: 2, read: 2 } } }\n"
            )
            os.environ["CLEARML_CONFIG_FILE"] = str(conf)

    def check_server(self, timeout: float = 3.0) -> None:
        """Fail fast when the API server does not answer.

        Raises:
            ClearMLUnavailable: no server configured, or it does not answer within `timeout`.
        """
        if not self.api_host:
            raise ClearMLUnavailable(
                "no ClearML server configured: set CLEARML_API_HOST, CLEARML_API_ACCESS_KEY and CLEARML_API_SECRET_KEY"
            )
        check_clearml_server(self.api_host, timeout)


def check_clearml_server(host: str, timeout: float = 3.0) -> None:
    """Fail fast (seconds, not the SDK's hours of retries) when the API server does not answer."""
    import urllib.error
    import urllib.request

    url = host.rstrip("/") + "/debug.ping"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            pass
    except urllib.error.HTTPError:
        return  # the server answered (an HTTP error still proves it is there)
    except (OSError, ValueError) as e:
        raise ClearMLUnavailable(
            f"ClearML server {host} does not answer ({e}); unset CLEARML_API_HOST to log offline, or start the server"
        ) from None


def update_weights(output_model, path: Path, offline: bool) -> None:
    """`OutputModel.update_weights`, with a shim for clearml 2.1.12 offline mode.

    In 2.1.12 `update_weights` reads `self.published` before its offline branch and fails with
    AttributeError: 'DummyModel' object has no attribute 'locked'. The private offline method is
    what the public one would call; tests/test_tracking.py notices when the SDK is fixed.
    """
    try:
        output_model.update_weights(weights_filename=str(path))
    except AttributeError as e:
        if not (offline and "locked" in str(e)):
            raise
        output_model._update_weights_offline(weights_filename=str(path))
