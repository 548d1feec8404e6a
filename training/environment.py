"""Names of the environment variables genkiln reads, in one place.

The SageMaker ones are set by SageMaker (or its training toolkit) inside a job or an
endpoint container; the GENKILN_ ones are ours. Keeping them here means a reader can
see every knob the code takes from its environment at a glance.
"""

# --- set by SageMaker training (toolkit conventions) ---
SM_MODEL_DIR = "SM_MODEL_DIR"
SM_OUTPUT_DATA_DIR = "SM_OUTPUT_DATA_DIR"
SM_HOSTS = "SM_HOSTS"
SM_CURRENT_HOST = "SM_CURRENT_HOST"
SM_NUM_GPUS = "SM_NUM_GPUS"
SM_NUM_CPUS = "SM_NUM_CPUS"
SM_CHANNEL_PREFIX = "SM_CHANNEL_"  # SM_CHANNEL_TRAIN, SM_CHANNEL_VALIDATION, ...
TRAINING_JOB_NAME = "TRAINING_JOB_NAME"
TRAINING_JOB_ARN = "TRAINING_JOB_ARN"

# --- set by SageMaker hosting ---
SAGEMAKER_BIND_TO_PORT = "SAGEMAKER_BIND_TO_PORT"

# --- genkiln's own ---
#: Root of the SageMaker file layout; "/opt/ml" in a container, a temp folder locally.
GENKILN_OPT_ML = "GENKILN_OPT_ML"
#: Where derived data (the extracted bundled corpus) is cached between runs.
GENKILN_CACHE_DIR = "GENKILN_CACHE_DIR"
#: Largest request body /invocations accepts, in bytes (SageMaker real-time: 6 MB).
GENKILN_MAX_REQUEST_BYTES = "GENKILN_MAX_REQUEST_BYTES"
#: Intra-op threads for serving; unset: measured at start-up (see inference.threads).
GENKILN_NUM_THREADS = "GENKILN_NUM_THREADS"
#: Log level for the server and training ("INFO" by default).
GENKILN_LOG_LEVEL = "GENKILN_LOG_LEVEL"
#: Requests in flight (decoding + waiting) before /invocations answers 429 (TGI's
#: max_concurrent_requests).
GENKILN_MAX_CONCURRENT_REQUESTS = "GENKILN_MAX_CONCURRENT_REQUESTS"
#: Sequences decoded together (text) or requests run as one batch (images).
GENKILN_MAX_BATCH_SIZE = "GENKILN_MAX_BATCH_SIZE"
#: "on" (default) or "off": off decodes one request at a time, in arrival order.
GENKILN_BATCHING = "GENKILN_BATCHING"
#: How long an image request waits for others to share its batch, in milliseconds.
GENKILN_BATCH_WAIT_MS = "GENKILN_BATCH_WAIT_MS"
#: Seconds a request may take before it is cut (SageMaker gives /invocations 60 s).
GENKILN_REQUEST_TIMEOUT_SECONDS = "GENKILN_REQUEST_TIMEOUT_SECONDS"
#: Prompts one request may carry (a list of inputs); more is answered 422.
GENKILN_MAX_PROMPTS_PER_REQUEST = "GENKILN_MAX_PROMPTS_PER_REQUEST"
#: Seconds between SIGTERM and the process's exit (SageMaker kills it 30 s after SIGTERM):
#: generations still running 5 s before the end are cut with an event that says so.
GENKILN_SHUTDOWN_GRACE_SECONDS = "GENKILN_SHUTDOWN_GRACE_SECONDS"
#: The model's name in the OpenAI routes (/v1/models, "model" in answers); default
#: genkiln-<family>-<first 12 hex digits of the artifact's digest>.
GENKILN_MODEL_ID = "GENKILN_MODEL_ID"
#: Weights the Transformer serves with: "fp32" (default), "bf16" or "int8" (weight-only
#: dynamic quantization of the Linear layers).
GENKILN_SERVING_PRECISION = "GENKILN_SERVING_PRECISION"

# --- feedback capture (inference/feedback_store.py) ---
#: "off" records nothing; anything else (or unset) records generations and feedback.
GENKILN_FEEDBACK = "GENKILN_FEEDBACK"
#: s3://bucket/prefix/ of the store in AWS (the capture bucket's feedback/ prefix).
GENKILN_FEEDBACK_URI = "GENKILN_FEEDBACK_URI"
#: KMS key (id or ARN) that encrypts records written to GENKILN_FEEDBACK_URI.
GENKILN_FEEDBACK_KMS_KEY_ID = "GENKILN_FEEDBACK_KMS_KEY_ID"
#: A local store directory, when GENKILN_FEEDBACK_URI is unset (default: a temp folder).
GENKILN_FEEDBACK_DIR = "GENKILN_FEEDBACK_DIR"
