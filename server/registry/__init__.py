"""The model store on disk: metadata, files written under .partial, verified and renamed,
the format checks, and downloads from URLs and Hugging Face (fetch).

May import: shared. Not Falcon, not inference, not api.
"""
