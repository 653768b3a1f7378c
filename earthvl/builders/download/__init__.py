"""Downloads from the source websites, one module per concern:

- `policy`: `FetchPolicy`, how politely and how persistently to download (shared by everything below).
- `guard`: the address guard (`allow_networks`) and the per-request deadline, where every connection is made.
- `client`: one GET over httpx, redirects followed hop by hop through the guard; what a failure was (`Problem`).
- `retry`: which failures are tried again and after how long (tenacity, honouring Retry-After).
- `manifest`: the `fetch_manifest.json` and its journal, which make a crawl resumable.
- `crawler`: `fetch_all`, the polite parallel image fetcher (GAIA).
- `files`: `download_file`, one large file, resumable and md5-verified.
- `zenodo`: the files of a Zenodo record, through `download_file`.
"""
