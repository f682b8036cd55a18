"""The COVID-CT scans: decoding and preprocessing (`decoding`), where they come from (`sources`), the cached dataset and the patient-level split (`dataset`), and follow-up dates (`followup`)."""
