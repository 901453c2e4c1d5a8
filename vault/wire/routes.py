"""The routes the team server answers so far, each with its request and response value
(docs/server.md §2): the codec registers them (``codec.REGISTRY``) under the operation's name
and ``<operation>.response``. A new route adds a line here; its values must be encodable
(``codec.compile_value`` checks every field type when it is registered)."""

from __future__ import annotations

from typing import Any

from vault.authority import engineer_requests as engineer_values
from vault.authority import requests as checkout_values

ROUTES: tuple[tuple[str, type[Any], type[Any]], ...] = (
    ("checkouts.reveal", checkout_values.CheckoutRequest, checkout_values.CheckoutResponse),
    ("checkouts.checkout", checkout_values.CheckoutRequest, checkout_values.CheckoutResponse),
    ("checkouts.checkin", checkout_values.ReleaseRequest, checkout_values.ReleaseResponse),
    ("checkouts.break_checkout", checkout_values.ReleaseRequest, checkout_values.ReleaseResponse),
    ("checkouts.list", checkout_values.ListRequest, checkout_values.ListResponse),
    ("engineers.whoami", engineer_values.WhoamiRequest, engineer_values.WhoamiAnswer),
)
