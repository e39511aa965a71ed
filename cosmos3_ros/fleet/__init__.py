# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Fleet serving: the sidecar's policy service as a Ray Serve application, for many robots and many GPUs.

Topology (one Ray Serve application, :data:`~cosmos3_ros.fleet.app.APP_NAME`)::

    robots --ws--> Ray Serve proxy (one per node, --port) --> Gateway replicas (websocket front, no GPU)
                                                             --> Policy replicas (one model each, one GPU each)

- :mod:`~cosmos3_ros.fleet.config` (pure): the ``fleet`` settings, what each replica loads, the Ray options;
- :mod:`~cosmos3_ros.fleet.batching` (pure): one batch of requests through a backend, batch-compatible requests in
  one batched model call, each request's own answer or error;
- :mod:`~cosmos3_ros.fleet.replica`: the Policy deployment (model, warm-up, ``@serve.batch``, health);
- :mod:`~cosmos3_ros.fleet.gateway`: the Gateway deployment (openpi websocket protocol, ``/healthz``, token,
  request schema and limits of the sidecar);
- :mod:`~cosmos3_ros.fleet.app`: start or join Ray, deploy, watch, stop (``cosmos3-ros fleet``).

Only :mod:`config` and :mod:`batching` import without Ray (``pip install 'ray[serve]'``).
"""
