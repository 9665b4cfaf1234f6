"""The API's routes, one module per area: `classify`, `screen` and `operations` (health,
readiness, metrics, the served model). `deps` holds what they share (the engine, the key
check, the caller's tenant, the settings, the bounds), `results` the response shapes built
from a scored transcript. `service.app` assembles them with the middlewares and handlers."""
