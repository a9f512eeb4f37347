# The operator image. (Not built by the local stack: the node agent runs `mlcycle` from the
# project's virtualenv instead, since this machine has no container runtime.)
FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir uv==0.13.9
COPY requirements.runtime.lock pyproject.toml README.md ./
COPY operator ./operator
RUN uv venv /opt/mlcycle \
 && uv pip sync --python /opt/mlcycle/bin/python requirements.runtime.lock \
 && uv pip install --python /opt/mlcycle/bin/python --no-deps .

FROM python:3.11-slim
COPY --from=build /opt/mlcycle /opt/mlcycle
ENV PATH=/opt/mlcycle/bin:$PATH PYTHONUNBUFFERED=1
USER 65532:65532
# HTTP (MLflow scoring, OIP v2) and OIP v2 over gRPC.
EXPOSE 8080 8081
ENTRYPOINT ["mlcycle"]
CMD ["run"]
