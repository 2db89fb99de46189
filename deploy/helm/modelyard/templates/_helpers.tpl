{{/* Names, labels and the pieces every modelyard container shares. */}}

{{- define "modelyard.labels" -}}
app.kubernetes.io/name: modelyard
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: modelyard
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* A Kubernetes name from a Kafka topic name: yard.m.ocr.2 -> yard-m-ocr-2 */}}
{{- define "modelyard.topicResource" -}}
{{- . | replace "." "-" | replace "_" "-" | lower | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Stage workload name: <release>-stage-<model>-<version> */}}
{{- define "modelyard.stageName" -}}
{{- printf "%s-stage-%s-%s" .root.Release.Name .stage.model (toString .stage.version) | replace "." "-" | replace "_" "-" | lower | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modelyard.image" -}}
{{- $tag := ternary .root.Values.image.cudaTag .root.Values.image.tag (default false .gpu) -}}
image: {{ printf "%s:%s" .root.Values.image.repository $tag | quote }}
imagePullPolicy: {{ .root.Values.image.pullPolicy }}
{{- end -}}

{{/* Environment of every modelyard process: Kafka, tracing, repository, state, drain; no
signing key (stages and the audit sink sign nothing). */}}
{{- define "modelyard.env" -}}
{{ include "modelyard.envFor" (dict "root" . "writerKey" "") }}
{{- end -}}

{{/* modelyard.env with a writer key: (dict "root" $ "writerKey" "router"|"monitor"|""), a
file of the keys Secret that modelyard.volumes mounts for the same workload */}}
{{- define "modelyard.envFor" -}}
{{- $writerKey := .writerKey }}
{{- with .root -}}
- {name: MODELYARD_BOOTSTRAP, value: {{ .Values.kafka.bootstrap | quote }}}
- {name: MODELYARD_TOPIC_PREFIX, value: {{ .Values.kafka.topicPrefix | quote }}}
- {name: MODELYARD_REPOSITORY, value: {{ .Values.models.mountPath | quote }}}
- {name: MODELYARD_STATE_DIR, value: /var/lib/modelyard}
- {name: MODELYARD_DRAIN_TIMEOUT_S, value: {{ .Values.drainTimeoutS | quote }}}
- {name: MODELYARD_GRPC_HOST, value: 0.0.0.0}
- {name: MODELYARD_METRICS_HOST, value: 0.0.0.0}
- {name: MODELYARD_LOG_JSON, value: "true"}
- {name: OTEL_EXPORTER_OTLP_ENDPOINT, value: {{ .Values.otel.endpoint | quote }}}
- {name: MODELYARD_KEYRING, value: /etc/modelyard/keys/keyring.yaml}
{{- if $writerKey }}
- {name: MODELYARD_WRITER_KEY, value: {{ printf "/etc/modelyard/keys/keys/%s.key" $writerKey }}}
{{- end }}
{{- with .Values.kafka.config }}
- {name: MODELYARD_KAFKA_CONFIG, value: {{ toJson . | quote }}}
{{- end }}
{{- if or .Values.kafka.existingSecret .Values.kafka.saslPassword }}
- name: MODELYARD_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ default (printf "%s-kafka" .Release.Name) .Values.kafka.existingSecret }}
      key: {{ .Values.kafka.existingSecretKey }}
{{- end }}
{{- with .Values.otel.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* gRPC TLS environment (servers only) */}}
{{- define "modelyard.tlsEnv" -}}
{{- if .Values.grpcTls.existingSecret }}
- {name: MODELYARD_GRPC_TLS_CERT, value: /etc/modelyard/tls/tls.crt}
- {name: MODELYARD_GRPC_TLS_KEY, value: /etc/modelyard/tls/tls.key}
{{- if .Values.grpcTls.clientCa }}
- {name: MODELYARD_GRPC_TLS_CLIENT_CA, value: /etc/modelyard/tls/ca.crt}
{{- end }}
{{- end }}
{{- end -}}

{{- define "modelyard.volumeMounts" -}}
- {name: state, mountPath: /var/lib/modelyard}
- {name: tmp, mountPath: /tmp}
- {name: pipelines, mountPath: /app/pipelines, readOnly: true}
{{- if .Values.models.volume }}
- {name: models, mountPath: {{ .Values.models.mountPath }}, readOnly: true}
{{- end }}
{{- if .Values.grpcTls.existingSecret }}
- {name: grpc-tls, mountPath: /etc/modelyard/tls, readOnly: true}
{{- end }}
- {name: keys, mountPath: /etc/modelyard/keys, readOnly: true}
{{- end -}}

{{/* The volumes of a workload: (dict "root" $ "keys" (list "router.key" ...)), the private
keys it signs with, beside the keyring every workload verifies with. Only the init Job gets the
admin key: a pod that can read it could sign any change. */}}
{{- define "modelyard.volumes" -}}
{{- $keys := .keys }}
{{- with .root }}
- {name: state, emptyDir: {}}
- {name: tmp, emptyDir: {}}
- name: pipelines
  configMap: {name: {{ printf "%s-pipelines" .Release.Name }}}
{{- if .Values.models.volume }}
- name: models
{{ toYaml .Values.models.volume | indent 2 }}
{{- end }}
{{- if .Values.grpcTls.existingSecret }}
- name: grpc-tls
  secret: {secretName: {{ .Values.grpcTls.existingSecret }}}
{{- end }}
{{- /* laid out as `modelyard init --keys-dir` reads them; 0400 (0440 with the pods' fsGroup:
a root-owned key readable by its group only is accepted, as a Secret mount gives it) */}}
- name: keys
  secret:
    secretName: {{ required "keys.existingSecret: a Secret with keyring.yaml, admin.key, router.key and monitor.key (docs/deploy.md)" .Values.keys.existingSecret }}
    defaultMode: 0400
    items:
      - {key: keyring.yaml, path: keyring.yaml}
{{- range $keys }}
      - {key: {{ . }}, path: {{ printf "keys/%s" . }}}
{{- end }}
{{- end }}
{{- end -}}

{{/* Pod-level settings shared by every workload */}}
{{- define "modelyard.podSpec" -}}
terminationGracePeriodSeconds: {{ add .Values.drainTimeoutS 15 }}
securityContext:
{{ toYaml .Values.podSecurityContext | indent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{ toYaml . | indent 2 }}
{{- end }}
{{- end -}}

{{/* HTTP probes on the metrics port */}}
{{- define "modelyard.probes" -}}
startupProbe:
  httpGet: {path: /healthz/live, port: metrics}
  periodSeconds: 5
  failureThreshold: 60
readinessProbe:
  httpGet: {path: /healthz/ready, port: metrics}
  periodSeconds: 5
livenessProbe:
  httpGet: {path: /healthz/live, port: metrics}
  periodSeconds: 10
  failureThreshold: 6
{{- end -}}
