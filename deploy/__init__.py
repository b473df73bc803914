"""Deploy a compiled model to a SageMaker real-time endpoint and take it down again.

One module per step, each driven by :mod:`deploy.cli` (``python -m deploy`` or
``xgb-deploy``):

* :mod:`deploy.settings`    - names, region and role from flags, environment or a config file;
* :mod:`deploy.aws`         - boto3 clients with retries, ``--dry-run``, and AWS errors in plain words;
* :mod:`deploy.upload`      - ``model.tar.gz`` to S3 with its sha256 in the object metadata;
* :mod:`deploy.endpoint`    - model, endpoint configuration, create or update, wait, rollback;
* :mod:`deploy.autoscaling` - scalable target and target-tracking policy on invocations per instance;
* :mod:`deploy.registry`    - Model Registry group and versions; the approval gate of a deploy;
* :mod:`deploy.recommend`   - Inference Recommender jobs, beside the benchmark's capacity plan;
* :mod:`deploy.loadtest`    - client-side load test, CloudWatch latency, the autoscaling target;
* :mod:`deploy.monitor`     - CloudWatch dashboard and alarms;
* :mod:`deploy.client`      - the ad server's client: pooled, hard timeout, fail-open, micro-batching;
* :mod:`deploy.invoke`      - a smoke test through ``sagemaker-runtime``;
* :mod:`deploy.teardown`    - delete what :mod:`deploy.endpoint` and :mod:`deploy.autoscaling` made.
"""
