"""Where and how the pipelines run: the local LocalDagRunner (`local`), Kubeflow Pipelines
(`kubeflow`, `kubeflow_config`, `kfp_client`, `cli`; `tfjob`: the Trainer as a multi-worker
TFJob), what differs per runner (`target`),
the session recommender's pipeline (`session_pipeline`), the stages both pipelines share
(`stages`) and what the command line prints (`console`)."""
