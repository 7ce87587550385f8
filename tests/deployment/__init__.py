"""End-to-end tests against a real distributed Airflow deployment (marker ``deployment``)."""
