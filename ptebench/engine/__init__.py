"""The replay engine: trace chunks -> pairing -> consumers -> CPA calls on the direct-map model."""
