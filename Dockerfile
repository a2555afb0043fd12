# One image for the API and the workers; the command picks the role.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md constraints.txt ./
COPY api ./api
COPY archive ./archive
COPY cli ./cli
COPY config ./config
COPY core ./core
COPY db ./db
COPY model ./model
COPY worker ./worker
RUN pip install -c constraints.txt '.[openvino]'

RUN useradd --create-home tumorseg
USER tumorseg
ENV TUMORSEG_VAR_DIR=/home/tumorseg/var
# 8000: the API; 9100: a worker's Prometheus exporter when TUMORSEG_WORKER_METRICS_PORT=9100
EXPOSE 8000 9100
CMD ["tumorseg", "api", "--host", "0.0.0.0", "--port", "8000"]
