# The data-set builder, fracbuild, with its numba kernels compiled into the image:
#
#   docker build -t onepfrac .
#   docker run --rm -v "$PWD/data:/data" onepfrac fracbuild render --delta 0.1 --L 21000 --out /data/shards
#
# Outputs go to /data, the working directory: mount a host folder there or they
# stay in the container. Build arguments:
#   EXTRAS     pip extras of the onepfrac package [default: "[s3]", object storage];
#              "[train,s3]" adds the trainer, fractrain (pulls torch, gigabytes).
#   BASE       the base image [default: python:3.11-slim]; any image with python3
#              (>= 3.10) and its venv module. scripts/build_image.sh builds one from
#              Debian's packages where no registry is reachable.
#   NUMBA_CPU  host [default]: kernels compiled for the building machine's CPU;
#              a container on another CPU model compiles them again at its first
#              render (seconds). generic: portable code, warm on every x86-64 CPU,
#              kernels about 14 % slower.
ARG BASE=python:3.11-slim
ARG NUMBA_CPU=host

FROM ${BASE} AS install
ARG EXTRAS="[s3]"
# Behind a TLS-intercepting proxy: a CA bundle for pip, mounted for the build
# (podman build -v BUNDLE:/run/build-ca.crt:ro --build-arg PIP_CERT=/run/build-ca.crt).
ARG PIP_CERT
# A virtual environment works the same on python:3.11-slim and on a Debian
# base, whose system python refuses pip installs (PEP 668).
ENV PATH=/opt/venv/bin:$PATH \
    NUMBA_CACHE_DIR=/opt/numba-cache
RUN python3 -m venv /opt/venv
COPY pyproject.toml README.md /opt/onepfrac/
COPY builder /opt/onepfrac/builder
COPY trainer /opt/onepfrac/trainer
COPY manifests /opt/onepfrac/manifests
RUN pip install --no-cache-dir --disable-pip-version-check "/opt/onepfrac${EXTRAS}" \
 && rm -rf /opt/onepfrac/build /opt/onepfrac/*.egg-info

# numba keys its cache on the CPU: the stage named by NUMBA_CPU sets what the
# kernels are compiled for, at build time and in every container.
FROM install AS numba-host
FROM install AS numba-generic
ENV NUMBA_CPU_NAME=generic

FROM numba-${NUMBA_CPU}
# numba compiles a kernel at its first call, not at import: a tiny render of
# each kind calls every kernel the builder uses, and cache=True writes the
# machine code to NUMBA_CACHE_DIR, where containers load it instead of
# compiling. The cache stays writable by any user (docker run -u UID), since
# numba skips a cache folder it cannot write to.
RUN set -e; warm=/tmp/warm; mkdir -p "$warm" \
 && fracbuild render --L 2 --size 64 --out "$warm/1p-frac" \
 && fracbuild render --kind fractaldb --categories 1 --instances 1 --size 64 --out "$warm/fractaldb" \
 && fracbuild render --kind rcdb --categories 1 --instances 1 --size 64 --out "$warm/rcdb" \
 && fracbuild render --kind visualatom --categories 1 --instances 1 --size 64 --out "$warm/visualatom" \
 && python3 -c "from PIL import Image; Image.new('L', (64, 64), 128).save('$warm/photo.png')" \
 && fracbuild render --kind real-image --image "$warm/photo.png" --L 1 --size 64 --out "$warm/real-image" \
 && rm -rf "$warm" \
 && chmod -R a+rwX "$NUMBA_CACHE_DIR"
WORKDIR /data
CMD ["fracbuild", "--help"]
