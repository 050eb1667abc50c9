"""Serve tuned runs over the OpenAI API, store every request and piece of feedback, and monitor them.

Modules: protocol (request and response models), request_body (reading and validating a request's JSON),
app (the FastAPI routes), engine (the engine interface), run_weights (where a run's weights are),
local_engine and decode (in-process batched generation), proxy_engine (any OpenAI-compatible server behind
tuneloop), routing (model ids, aliases, A/B splits), store (the request and feedback database), auth (API
keys), metrics (Prometheus), monitor (the HTML monitoring page).
"""
