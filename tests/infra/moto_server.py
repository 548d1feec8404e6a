"""`moto_server`, with one fix, for the deploy-cycle test: run as a script.

moto creates an `AWS::KMS::Key` from a template by passing template-shaped properties
straight to its KMS backend, which expects the KMS API's shapes:
- tags (`[{"Key": .., "Value": ..}]` instead of `TagKey`/`TagValue`): the KeyError
  makes the key silently missing, and every reference to it fails;
- the key policy (a JSON object instead of a JSON string): every later KMS call on the
  key fails with a server error.
Both are translated here. Everything else is moto's own server, started the way its
`moto_server` script does.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from moto.kms.models import Key
from moto.server import main

_create_key = Key.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]


def _create_key_in_api_shapes(cls: type, resource_name: str, cloudformation_json: Any,
                          account_id: str, region_name: str, **kwargs: Any) -> Any:
    properties = cloudformation_json.get("Properties", {})
    if isinstance(properties.get("KeyPolicy"), dict):
        properties["KeyPolicy"] = json.dumps(properties["KeyPolicy"])
    properties["Tags"] = [{"TagKey": tag["Key"], "TagValue": tag["Value"]}
                          for tag in properties.get("Tags", [])]
    return _create_key(cls, resource_name, cloudformation_json, account_id, region_name,
                       **kwargs)


Key.create_from_cloudformation_json = classmethod(_create_key_in_api_shapes)  # type: ignore[assignment]

if __name__ == "__main__":
    main(sys.argv[1:])
