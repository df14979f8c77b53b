"""The static report, ``python -m bench.static``: every kernel of a training step compiled
for sm_90a under a stand-in driver (sm90_driver.py) at AlexNet's launches
(alexnet_launches.py), read from its SASS and turned into a predicted time (see __main__.py).
"""
