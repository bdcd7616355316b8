"""AnomaliesGate: halts the pipeline when ExampleValidator found anomalies."""
