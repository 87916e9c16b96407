"""The RULES.md rules a request body can show, beyond the basic limits of ``limits.py``.

RULES.md (``/work/shared/klaviyo/RULES.md``) lists what Klaviyo enforces but its OpenAPI
schema does not state. Each module here holds the checks of one kind of rule, each check tagged
with its RULES.md id (:func:`kafka_klaviyo_dev.emulator.limits.enforces`); which checks an
endpoint runs is its row in :data:`kafka_klaviyo_dev.emulator.endpoints.ENDPOINTS`.

- :mod:`.fields`: the shape of resources: unknown fields (X1, P10, C11, D24).
- :mod:`.contacts`: profiles' identifiers and contact data (D3, D4, E9, E11, E13, S10-S12, U4).
- :mod:`.events`: event data (E14, E17, E19, D5, D7).
- :mod:`.catalog`: catalog items (C5-C8, C10).
- :mod:`.violations`: refusals counted by rule, for the control API.

Every refusal is Klaviyo's 400 ``invalid`` with a ``source.pointer`` at the offending value.
"""
