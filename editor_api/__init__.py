"""Editor API (FastAPI): flows, validation, deploy, status, live events, metrics; with auth.

``create_app(supervisor, authenticator)`` builds the app; ``klimaflow run --api HOST:PORT``
serves it beside the running flows. See docs/editor-api.md.
"""

from editor_api.app import create_app
from editor_api.auth import Authenticator, AuthSettings, load_auth_settings

__all__ = ["AuthSettings", "Authenticator", "create_app", "load_auth_settings"]
