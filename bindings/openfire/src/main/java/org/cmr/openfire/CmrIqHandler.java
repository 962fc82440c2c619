package org.cmr.openfire;

import org.cmr.CmrException;
import org.cmr.IqAnswer;
import org.cmr.Router;
import org.dom4j.DocumentException;
import org.dom4j.DocumentHelper;
import org.jivesoftware.openfire.IQHandlerInfo;
import org.jivesoftware.openfire.handler.IQHandler;
import org.xmpp.packet.IQ;
import org.xmpp.packet.PacketError;

/**
 * XEP-0354 IQs (the {@code <query/>} get and the {@code <cmr/>} set, one
 * namespace): the library answers, the plugin sends and persists.
 */
final class CmrIqHandler extends IQHandler {
    private static final IQHandlerInfo INFO = new IQHandlerInfo("query", "urn:xmpp:cmr:0");

    private final CmrPlugin plugin;
    private final Router router;

    CmrIqHandler(CmrPlugin plugin, Router router) {
        super("XEP-0354 Customizable Message Routing");
        this.plugin = plugin;
        this.router = router;
    }

    @Override
    public IQ handleIQ(IQ iq) {
        if (iq.getType() == IQ.Type.result || iq.getType() == IQ.Type.error) {
            // Answers are not answered.
            return null;
        }
        IqAnswer answer;
        try {
            answer = router.handleIq(iq.toXML());
        } catch (CmrException e) {
            // A client's malformed IQ: answered, and not worth a warning each.
            plugin.refused(e, null);
            return error(iq, e.routerFailed()
                    ? PacketError.Condition.internal_server_error
                    : PacketError.Condition.bad_request);
        }
        if (answer == null) {
            // A result or an error addressed here: nothing to answer.
            return null;
        }
        if (answer.changed()) {
            plugin.persist(iq.getFrom().asBareJID());
        }
        try {
            return new IQ(DocumentHelper.parseText(answer.stanza()).getRootElement());
        } catch (DocumentException e) {
            throw new IllegalStateException("cmr: the library's answer does not parse: " + answer.stanza(), e);
        }
    }

    /** An error reply to `iq`, carrying a copy of its payload. */
    static IQ error(IQ iq, PacketError.Condition condition) {
        IQ error = IQ.createResultIQ(iq);
        error.setChildElement(iq.getChildElement().createCopy());
        error.setError(condition);
        return error;
    }

    @Override
    public IQHandlerInfo getInfo() {
        return INFO;
    }
}
