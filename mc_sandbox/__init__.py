"""A local Salesforce Marketing Cloud emulator (see ``python -m mc_sandbox --help``).

It never imports ``stream_app``: the pipeline talks to it over the network only, as it would to MC.
"""
