"""glance-gate as a mitmdump script, one process with no supervisor:

    mitmdump --mode reverse:http://127.0.0.1:9292 -s addons/script.py \
             --set glance_gate_config=config.toml
"""

from addons.compose import compose

addons, _ = compose()
