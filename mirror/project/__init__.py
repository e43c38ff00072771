"""A project's artefacts, fetched, verified, written and pruned by one component.

::

    source.py   UpstreamSource: the page (TUF-verified in the index scheme), the JSON API
    files.py    FileStore: files and .metadata, single flight, verified, committed
    pages.py    PageStore: the served pages (every form), the record, JSON API files
    jsonapi.py  JsonApiStore: JSON API answers, always cut to the served page
    intents.py  PruneIntents: what a writer may leave unlisted, settled after a crash too
    keeper.py   ProjectKeeper: the one path that updates or removes a project
    root.py     the root /simple/ pages, and the projects the web root holds

Pull-through (``mirror.cache``), the changelog follower and the sync (``mirror.sync``)
call the keeper; none of them writes a project's files itself.
"""
