package org.cmr.openfire;

import org.cmr.CmrException;
import org.cmr.Router;
import org.dom4j.Element;
import org.jivesoftware.openfire.IQHandlerInfo;
import org.jivesoftware.openfire.XMPPServer;
import org.jivesoftware.openfire.handler.IQHandler;
import org.xmpp.packet.IQ;
import org.xmpp.packet.JID;
import org.xmpp.packet.PacketError;

/**
 * The per-account figures, for the server's admins:
 * {@code <iq type='get'><stats xmlns='urn:x-cmr:stats:0' jid='user@domain'/></iq>}
 * is answered with the active algorithm and the library's table (a header
 * line naming its 8 columns, then one tab-separated row per session:
 * resource, routed, priority, show, available, load, token, hibernating)
 * as the element's text. Any XMPP client with an XML console can ask.
 */
final class StatsIqHandler extends IQHandler {
    static final String NAMESPACE = "urn:x-cmr:stats:0";
    private static final IQHandlerInfo INFO = new IQHandlerInfo("stats", NAMESPACE);

    private final Router router;

    StatsIqHandler(Router router) {
        super("cmr statistics");
        this.router = router;
    }

    @Override
    public IQ handleIQ(IQ iq) {
        if (iq.getType() != IQ.Type.get) {
            return iq.getType() == IQ.Type.set ? CmrIqHandler.error(iq, PacketError.Condition.bad_request) : null;
        }
        if (iq.getFrom() == null || !XMPPServer.getInstance().getAdmins().contains(iq.getFrom().asBareJID())) {
            return CmrIqHandler.error(iq, PacketError.Condition.forbidden);
        }
        String account = iq.getChildElement().attributeValue("jid");
        IQ result = IQ.createResultIQ(iq);
        Element stats = result.setChildElement("stats", NAMESPACE);
        try {
            String bare = new JID(account).toBareJID();
            stats.addAttribute("jid", bare);
            stats.setText("algorithm\t" + router.algorithm(bare) + "\n" + router.stats(bare));
        } catch (CmrException | IllegalArgumentException | NullPointerException e) {
            IQ error = CmrIqHandler.error(iq, PacketError.Condition.bad_request);
            error.getError().setText(String.valueOf(e.getMessage()));
            return error;
        }
        return result;
    }

    @Override
    public IQHandlerInfo getInfo() {
        return INFO;
    }
}
