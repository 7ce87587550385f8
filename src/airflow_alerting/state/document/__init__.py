"""Document stores: state as JSON documents read and written whole (memory, Airflow Variables).

:class:`DocumentStore` is built in layers, one module each; ``airflow_alerting.state.base`` re-exports
it with the records and the protocol it implements.
"""

# the protocol and records first: base imports this package's store at its end, so a first import
# of this package must not start with the store
import airflow_alerting.state.base  # noqa: F401
from airflow_alerting.state.document.store import DocumentStore

__all__ = ["DocumentStore"]
