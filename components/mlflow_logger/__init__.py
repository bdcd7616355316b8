"""MlflowLogger: every pipeline candidate as one MLflow run; blessed + pushed ones as registry versions."""
