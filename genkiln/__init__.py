"""genkiln's control plane and client side: what runs on a laptop or a CI runner, never in
a training job or an endpoint container.

    cli.py         the `genkiln` command
    launch.py      training and tuning jobs: SageMaker local mode and SageMaker (SDK 3.x)
    tuning.py      the hyperparameter tuning job request over a family's ranges
    deploy.py      endpoints: a local-mode container or a SageMaker endpoint
    client.py      EndpointClient: a server by URL, or an endpoint by name (and its
                   asynchronous twin)
    playground/    the web page to prompt, regenerate and judge
    demo.py        what `make run` runs
    sagemaker_sdk.py  sessions of the SageMaker Python SDK, telemetry opted out

It imports the runtimes (training's hyperparameter checks and family registry,
inference's server for `genkiln serve`) and infra's layout and outputs; nothing in
`training/` or `inference/` imports it, and the image does not ship it.
"""
