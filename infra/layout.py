"""Where things live inside the project's buckets.

IAM statements are scoped to these prefixes, and the launcher writes and reads under
them, so both sides share this one module (it imports nothing from CDK).
"""

# data bucket
DATASETS = "datasets/"  # training data, one folder per data set

# artifacts bucket
MODELS = "models/"  # training-job output: models/<job>/output/model.tar.gz
CHECKPOINTS = "checkpoints/"  # /opt/ml/checkpoints of spot and long jobs
EVALUATIONS = "evaluations/"  # evaluation.json written by the pipeline's evaluate step
ASYNC_RESULTS = "async/"  # responses and failures of asynchronous endpoints

# capture bucket
CAPTURE = "capture/"  # endpoint data capture (requests and responses)
FEEDBACK = "feedback/"  # people's judgements, read by refinement jobs
ASYNC_REQUESTS = "async-requests/"  # payloads of asynchronous invocations
