// Validates the custom resources of a rendered chart against their operators' schemas, as the
// npm packages @kubernetes-models/keda and @kubernetes-models/strimzi-kafka-operator generate
// them from the CRDs (pinned in scripts/deploy_check.sh, installed under NODE_MODELS).
// Input on stdin: one JSON document per line. Exit 1 when any resource is invalid.
import { createInterface } from "node:readline";
import { join } from "node:path";

const root = join(process.env.NODE_MODELS, "node_modules", "@kubernetes-models");
const MODELS = {
  "keda.sh/v1alpha1/ScaledObject": "keda/keda.sh/v1alpha1/ScaledObject.js",
  "kafka.strimzi.io/v1/KafkaTopic": "strimzi-kafka-operator/kafka.strimzi.io/v1/KafkaTopic.js",
};

let failed = 0;
const counts = {};
for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const doc = JSON.parse(line);
  const key = `${doc.apiVersion}/${doc.kind}`;
  const file = MODELS[key];
  if (!file) continue;
  const module = await import(join(root, file));
  try {
    new module[doc.kind](doc).validate();
    counts[key] = (counts[key] ?? 0) + 1;
  } catch (error) {
    failed += 1;
    console.error(`${key} ${doc.metadata?.name}: ${error.message}`);
  }
}
for (const [key, n] of Object.entries(counts)) console.log(`valid: ${n} ${key}`);
if (failed) {
  console.error(`${failed} invalid custom resource(s)`);
  process.exit(1);
}
