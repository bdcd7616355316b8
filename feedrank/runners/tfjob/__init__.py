"""The Trainer as a multi-worker TensorFlow job on Kubeflow (``trainer_job.kind: tfjob``).

With the switch on, the compiled package's Trainer step does not train in its own pod:
it submits a ``kubeflow.org/v1`` ``TFJob`` to the Kubeflow Training Operator and waits
for it. Each Worker replica runs the same TFX Trainer executor with the step's executor
input, on the GPU node pool, with the ``TF_CONFIG`` the operator gives it; worker 0 is
the chief and its executor output becomes the step's.

* `settings`: the ``trainer_job`` section of ``configs/kubeflow.yaml`` and its checks;
* `render`: the TFJob, as pure functions of the settings (template at compile time,
  the instance at launch time), and the job's state from its status;
* `launch`: the Trainer step's command: submit, wait, copy the chief's executor output;
* `worker`: each worker's command: its own executor output file, then TFX's entry point.
"""
