{{- define "feast.labels" -}}
app.kubernetes.io/part-of: cityscale
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "feast.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "feast.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
capabilities:
  drop: ["ALL"]
{{- end -}}

{{- define "feast.checkovSkips" -}}
# Image tags are immutable (Artifact Registry immutable_tags; upstream redis by exact version); digests are resolved at push time.
checkov.io/skip1: CKV_K8S_43=Tags are immutable - Artifact Registry repository has immutable_tags and redis is pinned to an exact release
# Feast expands ${REDIS_PASSWORD} in feature_store.yaml and redis-server takes --requirepass; neither reads a password file.
checkov.io/skip2: CKV_K8S_35=Feast feature_store.yaml env substitution and redis-server --requirepass need the password as an environment variable
{{- end -}}

{{- /* The CityScale app image, registry/cityscale:<git sha>: the same reference as the platform chart's
cityscale-config CITYSCALE_IMAGE (both releases get image.repository and image.tag from the same helmfile values). */ -}}
{{- define "feast.image" -}}
{{ required "image.repository is required" .Values.image.repository }}:{{ required "image.tag is required" .Values.image.tag }}
{{- end -}}
