"""The distributed prototype: edge servers as Dask workers behind emulated links, running the image-repair
service under mecsim's schedulers, and its comparison with the event model (`docs/prototype.md`)."""
