"""What an ML instance type brings with it, in one table: local NVMe storage, a GPU.

SageMaker's rules follow from both, so the CDK app, the launcher and the deployer all ask
here (this module imports nothing from CDK):

- A type with local instance storage encrypts it with a hardware module; SageMaker
  refuses a volume KMS key for it (CreateTrainingJob `ResourceConfig.VolumeKmsKeyId`,
  CreateProcessingJob `ClusterConfig.VolumeKmsKeyId`, tuning jobs, and
  CreateEndpointConfig `KmsKeyId`), and a training volume larger than the local storage
  (`VolumeSizeInGB`). https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ResourceConfig.html
  https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateEndpointConfig.html
- A type with an NVIDIA GPU needs the CUDA build of the image to use it.

The families below are those SageMaker offers with instance store volumes
(https://docs.aws.amazon.com/sagemaker/latest/dg/host-instance-storage.html,
https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/InstanceStorage.html), with the local
storage of the family's smallest size in GB, the bound a volume size may not pass.
"""

from __future__ import annotations

#: instance family -> local NVMe storage of its smallest size, GB
LOCAL_STORAGE_GB: dict[str, int] = {
    "c5d": 50, "m5d": 75, "r5d": 75, "c6id": 118, "m6id": 118, "r6id": 118,
    "g4dn": 125, "g4ad": 150, "g5": 250, "g6": 250, "g6e": 250, "gr6": 600,
    "p3dn": 1800, "p4d": 8000, "p4de": 8000, "p5": 3800, "p5e": 30400, "p5en": 30400,
    "trn1": 474, "trn1n": 7600, "trn2": 7600,
}

#: instance families with NVIDIA GPUs (CUDA); Inferentia and Trainium (inf*, trn*) are not
GPU_FAMILIES = frozenset({"p2", "p3", "p3dn", "p4d", "p4de", "p5", "p5e", "p5en", "g4dn",
                          "g5", "g6", "g6e", "gr6"})


def family_of(instance_type: str) -> str:
    """`ml.g5.xlarge` -> `g5`; `local_gpu` and other non-ml types -> `""`."""
    parts = instance_type.split(".")
    return parts[1] if len(parts) >= 3 and parts[0] == "ml" else ""


def has_local_storage(instance_type: str) -> bool:
    return family_of(instance_type) in LOCAL_STORAGE_GB


def is_gpu(instance_type: str) -> bool:
    return family_of(instance_type) in GPU_FAMILIES or instance_type == "local_gpu"


def volume_key(instance_type: str, key_arn: str | None) -> str | None:
    """The volume KMS key a request may name for ``instance_type``: none with local
    storage (encrypted by the instance itself; SageMaker refuses a key there)."""
    return None if has_local_storage(instance_type) else key_arn


def volume_size(instance_type: str, wanted_gb: int) -> int:
    """A training volume SageMaker accepts: at most the local storage, where there is
    some (the job then uses that storage instead of an EBS volume)."""
    local = LOCAL_STORAGE_GB.get(family_of(instance_type))
    return min(wanted_gb, local) if local else wanted_gb
