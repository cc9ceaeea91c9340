# The dataset builder: `docker run IMAGE fracbuild render --delta 0.1 --L 21000 --out /data/shards`.
# Add the trainer with --build-arg EXTRAS="[train,s3]" (pulls torch).
FROM python:3.11-slim
ARG EXTRAS="[s3]"
WORKDIR /opt/onepfrac
COPY pyproject.toml README.md ./
COPY builder ./builder
COPY trainer ./trainer
COPY manifests ./manifests
RUN pip install --no-cache-dir ".${EXTRAS}" \
 && python -c "import fracbuild.kernels"  # compile-check the numba kernels at build time
WORKDIR /data
ENTRYPOINT []
CMD ["fracbuild", "--help"]
