"""The serving rule, framework-free: the typed request, scale, fields, refusal, engine Protocol, verdict."""
