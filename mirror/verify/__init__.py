"""``pypi-mirror verify``: the whole store checked in bounded memory, and repaired.

- ``pages``: a project's page forms and JSON API answers checked (pure), and what they
  reference;
- ``walk``: the store walked: pages, then ``web/packages`` and the references sorted on
  disk (``mirror.sorting``) and merged, files hashed on a thread pool, temp leftovers;
- ``repair``: what ``--repair`` does about each finding, through the ``ProjectKeeper``;
- ``report``: findings counted, the first of each kind kept, rendered for people or JSON;
- ``commands``: the subcommand.
"""
