// One OIP v2 JSON request to a modelyard stage and its reply, with nothing but Apache Kafka's Java
// client (org.apache.kafka:kafka-clients): what a Java producer written without modelyard's
// library does (docs/wire-format.md). tests/integration/test_interop.py compiles and runs it.
//
// java -cp 'kafka-clients.jar:...' OipRoundTrip BOOTSTRAP MODEL_TOPIC REPLY_TOPIC REQUEST_ID TEXT
// Prints the reply's value (JSON) on stdout; exit code 0 with a reply, 2 without one in 60 s.

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public final class OipRoundTrip {
  public static void main(String[] args) throws Exception {
    String bootstrap = args[0], topic = args[1], replyTopic = args[2], id = args[3];
    String request = "{\"id\":\"" + id + "\",\"inputs\":[{\"name\":\"text\",\"datatype\":\"BYTES\","
        + "\"shape\":[1],\"data\":[\"" + args[4] + "\"]}]}";
    createReplyTopic(bootstrap, replyTopic);
    Properties producerProps = new Properties();
    producerProps.put("bootstrap.servers", bootstrap);
    producerProps.put("key.serializer", StringSerializer.class.getName());
    producerProps.put("value.serializer", StringSerializer.class.getName());
    try (KafkaProducer<String, String> producer = new KafkaProducer<>(producerProps)) {
      ProducerRecord<String, String> record = new ProducerRecord<>(topic, id, request);
      record.headers().add("content-type", bytes("application/json"));
      record.headers().add("reply-to", bytes(replyTopic));
      producer.send(record).get(); // acknowledged by the broker
    }
    String reply = awaitReply(bootstrap, replyTopic, id);
    if (reply == null) {
      System.err.println("no reply to " + id + " on " + replyTopic + " within 60 s");
      System.exit(2);
    }
    System.out.println(reply);
  }

  private static void createReplyTopic(String bootstrap, String name) throws Exception {
    try (Admin admin = Admin.create(Map.of("bootstrap.servers", bootstrap))) {
      admin.createTopics(List.of(new NewTopic(name, 1, (short) -1))).all().get();
    } catch (ExecutionException e) {
      if (!(e.getCause() instanceof TopicExistsException)) {
        throw e;
      }
    }
  }

  private static String awaitReply(String bootstrap, String replyTopic, String id) {
    Properties props = new Properties();
    props.put("bootstrap.servers", bootstrap);
    props.put("enable.auto.commit", "false"); // no group: assigned, nothing committed
    props.put("key.deserializer", StringDeserializer.class.getName());
    props.put("value.deserializer", StringDeserializer.class.getName());
    try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(props)) {
      TopicPartition partition = new TopicPartition(replyTopic, 0);
      consumer.assign(List.of(partition));
      consumer.seekToBeginning(List.of(partition));
      long deadline = System.nanoTime() + Duration.ofSeconds(60).toNanos();
      while (System.nanoTime() < deadline) {
        for (ConsumerRecord<String, String> record : consumer.poll(Duration.ofMillis(200))) {
          if (id.equals(record.key())) {
            return record.value();
          }
        }
      }
    }
    return null;
  }

  private static byte[] bytes(String text) {
    return text.getBytes(StandardCharsets.UTF_8);
  }
}
