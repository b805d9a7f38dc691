"""ExperienceLibrary: the one Python API over the experience store (SQLite truth + Chroma index).

CONTRACT (implemented by the memory issue; other packages code against these signatures):

    lib = ExperienceLibrary(workspace)            # <workspace>/experience.db, <workspace>/chroma/
    lib = ExperienceLibrary(workspace, chroma_url="http://127.0.0.1:8000")   # shared Chroma server
    lib.record(episode)                            # atomic, idempotent by episode.id; indexes it
    lib.get(episode_id) -> Episode                 # KeyError with a clear message if unknown
    lib.episodes(env=None, success=None, first_success=None, model_version=None,
                 run_id=None, since=None, limit=None) -> list[Episode]   # oldest first
    lib.count(**same filters) -> int
    lib.search(text, env=None, success=None, k=5, model_version=None) -> list[SearchHit]
    lib.stats(env=None) -> dict                    # episodes, first-try / final accuracy per env & version, ...
    lib.export(path, format="jsonl" | "hf", **filters) -> int
    lib.reindex(env=None) -> int                   # rebuild Chroma from SQLite
    lib.start_run(run) / lib.finish_run(run_id, summary)
    lib.add_model_version(mv) / lib.get_model_version(id) / lib.list_model_versions()
    lib.set_model_status(id, status, note="") / lib.serving_version() -> ModelVersion
    lib.close()  (also a context manager)
"""
