"""The search stage: space, study, driver (``runner``), trial execution, Ray executor, confirmation, verdict,
results, the work-directory lock, and the search's use of memory (``memory``)."""
