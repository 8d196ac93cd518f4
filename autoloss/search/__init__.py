"""The search: space, study, driver, trial execution, Ray executor, confirmation, verdict, results, lock."""
from autoloss._api_module import make_callable

make_callable(__name__)  # autoloss.search(...) is also the API function (autoloss/api.py)
