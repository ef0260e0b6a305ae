"""schemathesis hooks for the suite's fuzz run (``SCHEMATHESIS_HOOKS=tests.integration.st_hooks``).

Event and upload times may not be in the future (beyond 5 minutes of clock skew): a rule of the
server's clock that OpenAPI cannot state. Well-formed times are drawn from the past, so that a
valid request the service refuses is a real failure of ``positive_data_acceptance``.
"""

from datetime import UTC, datetime

import schemathesis
from hypothesis import strategies as st

PAST = st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(2026, 1, 1),
    timezones=st.sampled_from([UTC]),
).map(lambda d: d.isoformat().replace("+00:00", "Z"))

schemathesis.openapi.format("date-time", PAST)
