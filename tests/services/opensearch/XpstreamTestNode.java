import java.util.Collections;
import java.util.List;

import org.opensearch.analysis.common.CommonAnalysisPlugin;
import org.opensearch.common.settings.Settings;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.transport.Netty4Plugin;

/** One OpenSearch node on 127.0.0.1 for tests: the HTTP module and common analysis on the classpath. */
public final class XpstreamTestNode extends Node {
    private XpstreamTestNode(Settings settings) {
        super(
            InternalSettingsPreparer.prepareEnvironment(settings, Collections.emptyMap(), null, () -> "xpstream-test"),
            List.of(Netty4Plugin.class, CommonAnalysisPlugin.class),
            true);
    }

    public static void main(String[] args) throws Exception {
        Settings settings = Settings.builder()
            .put("path.home", args[0])
            .put("http.port", args[1])
            .put("transport.port", args[2])
            .put("network.host", "127.0.0.1")
            .put("discovery.type", "single-node")
            .put("cluster.name", "xpstream-test")
            .put("node.name", "xpstream-test")
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .build();
        Node node = new XpstreamTestNode(settings);
        node.start();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
            } catch (Exception ignored) {
                // the process is exiting
            }
        }));
        System.out.println("started");
        new java.util.concurrent.CountDownLatch(1).await();  // node threads are daemons
    }
}
