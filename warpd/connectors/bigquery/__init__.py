"""BigQuery destination (google-cloud-bigquery, pyarrow): Parquet loads into staging tables, then MERGE."""
