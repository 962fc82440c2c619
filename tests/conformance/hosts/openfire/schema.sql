-- The tables Openfire 4.2.0 queries, for its embedded HSQLDB, written for
-- this suite from the table and column names in 4.2.0's SQL statements (no
-- schema file is on Maven Central). Launcher.java runs it once, when the
-- database is new. Dates are the 15-digit millisecond strings that 4.2.0
-- writes (StringUtils.dateToMillis); flags are 0/1 integers.

-- SchemaManager: 26 is 4.2.0's schema version, so it installs nothing.
CREATE TABLE ofVersion (name VARCHAR(50) PRIMARY KEY, version INTEGER NOT NULL);
INSERT INTO ofVersion (name, version) VALUES ('openfire', 26);

-- SequenceManager's counters, by id type (JiveConstants: roster 18,
-- offline 19, MUC room 23, security audit 25, MUC service 26); it would
-- add a missing one with a warning.
CREATE TABLE ofID (idType INTEGER PRIMARY KEY, id BIGINT NOT NULL);
INSERT INTO ofID (idType, id) VALUES (18, 1);
INSERT INTO ofID (idType, id) VALUES (19, 1);
INSERT INTO ofID (idType, id) VALUES (23, 1);
INSERT INTO ofID (idType, id) VALUES (25, 1);
INSERT INTO ofID (idType, id) VALUES (26, 1);
CREATE TABLE ofProperty (name VARCHAR(100) PRIMARY KEY, propValue LONGVARCHAR NOT NULL, encrypted INTEGER);

-- Users. A row with plainPassword alone is enough: DefaultAuthProvider
-- derives the SCRAM salt and keys (and stores them) on first use.
CREATE TABLE ofUser (
  username VARCHAR(64) PRIMARY KEY, storedKey VARCHAR(64), serverKey VARCHAR(64), salt VARCHAR(64),
  iterations INTEGER, plainPassword VARCHAR(64), encryptedPassword VARCHAR(255),
  name VARCHAR(100), email VARCHAR(100), creationDate CHAR(15) NOT NULL, modificationDate CHAR(15) NOT NULL);
CREATE TABLE ofUserProp (username VARCHAR(64), name VARCHAR(100), propValue LONGVARCHAR NOT NULL,
  PRIMARY KEY (username, name));
CREATE TABLE ofUserFlag (username VARCHAR(64), name VARCHAR(100), startTime CHAR(15), endTime CHAR(15),
  PRIMARY KEY (username, name));
CREATE TABLE ofPresence (username VARCHAR(64) PRIMARY KEY, offlinePresence LONGVARCHAR, offlineDate CHAR(15) NOT NULL);
CREATE TABLE ofOffline (username VARCHAR(64), messageID BIGINT, creationDate CHAR(15) NOT NULL,
  messageSize INTEGER NOT NULL, stanza LONGVARCHAR NOT NULL, PRIMARY KEY (username, messageID));
CREATE TABLE ofPrivacyList (username VARCHAR(64), name VARCHAR(100), isDefault INTEGER NOT NULL,
  list LONGVARCHAR NOT NULL, PRIMARY KEY (username, name));
CREATE TABLE ofVCard (username VARCHAR(64) PRIMARY KEY, vcard LONGVARCHAR NOT NULL);
CREATE TABLE ofPrivate (username VARCHAR(64), name VARCHAR(100), namespace VARCHAR(200),
  privateData LONGVARCHAR NOT NULL, PRIMARY KEY (username, name, namespace));
CREATE TABLE ofSecurityAuditLog (msgID BIGINT PRIMARY KEY, username VARCHAR(64) NOT NULL,
  entryStamp BIGINT NOT NULL, summary VARCHAR(255) NOT NULL, node VARCHAR(255) NOT NULL, details LONGVARCHAR);

-- Rosters.
CREATE TABLE ofRoster (rosterID BIGINT PRIMARY KEY, username VARCHAR(64) NOT NULL, jid VARCHAR(1024) NOT NULL,
  sub INTEGER NOT NULL, ask INTEGER NOT NULL, recv INTEGER NOT NULL, nick VARCHAR(255));
CREATE INDEX ofRoster_username ON ofRoster (username);
CREATE TABLE ofRosterGroups (rosterID BIGINT, rank INTEGER, groupName VARCHAR(255) NOT NULL,
  PRIMARY KEY (rosterID, rank));

-- Groups (shared rosters read them).
CREATE TABLE ofGroup (groupName VARCHAR(50) PRIMARY KEY, description VARCHAR(255));
CREATE TABLE ofGroupProp (groupName VARCHAR(50), name VARCHAR(100), propValue LONGVARCHAR NOT NULL,
  PRIMARY KEY (groupName, name));
CREATE TABLE ofGroupUser (groupName VARCHAR(50), username VARCHAR(100), administrator INTEGER,
  PRIMARY KEY (groupName, username, administrator));

-- Federation and components (both listeners are off; the managers still load).
CREATE TABLE ofRemoteServerConf (xmppDomain VARCHAR(255) PRIMARY KEY, remotePort INTEGER, permission VARCHAR(10) NOT NULL);
CREATE TABLE ofExtComponentConf (subdomain VARCHAR(255), wildcard INTEGER, secret VARCHAR(255),
  permission VARCHAR(10) NOT NULL, PRIMARY KEY (subdomain, wildcard));

-- Multi-user chat: no service row, so no MUC service and no room tables.
CREATE TABLE ofMucService (serviceID BIGINT NOT NULL, subdomain VARCHAR(255) PRIMARY KEY,
  description VARCHAR(255), isHidden INTEGER NOT NULL);
CREATE TABLE ofMucServiceProp (serviceID BIGINT, name VARCHAR(100), propValue LONGVARCHAR NOT NULL,
  PRIMARY KEY (serviceID, name));

-- Publish-subscribe and PEP: the service loads its nodes at start.
CREATE TABLE ofPubsubNode (
  serviceID VARCHAR(100), nodeID VARCHAR(255), leaf INTEGER NOT NULL,
  creationDate CHAR(15) NOT NULL, modificationDate CHAR(15) NOT NULL, parent VARCHAR(255),
  deliverPayloads INTEGER NOT NULL, maxPayloadSize INTEGER, persistItems INTEGER, maxItems INTEGER,
  notifyConfigChanges INTEGER NOT NULL, notifyDelete INTEGER NOT NULL, notifyRetract INTEGER NOT NULL,
  presenceBased INTEGER NOT NULL, sendItemSubscribe INTEGER NOT NULL, publisherModel VARCHAR(15) NOT NULL,
  subscriptionEnabled INTEGER NOT NULL, configSubscription INTEGER NOT NULL, accessModel VARCHAR(10) NOT NULL,
  payloadType VARCHAR(100), bodyXSLT VARCHAR(100), dataformXSLT VARCHAR(100), creator VARCHAR(1024) NOT NULL,
  description VARCHAR(255), language VARCHAR(255), name VARCHAR(50), replyPolicy VARCHAR(15),
  associationPolicy VARCHAR(15), maxLeafNodes INTEGER, PRIMARY KEY (serviceID, nodeID));
CREATE TABLE ofPubsubNodeJIDs (serviceID VARCHAR(100), nodeID VARCHAR(255), jid VARCHAR(1024),
  associationType VARCHAR(20) NOT NULL, PRIMARY KEY (serviceID, nodeID, jid));
CREATE TABLE ofPubsubNodeGroups (serviceID VARCHAR(100) NOT NULL, nodeID VARCHAR(255) NOT NULL,
  rosterGroup VARCHAR(100) NOT NULL);
CREATE TABLE ofPubsubAffiliation (serviceID VARCHAR(100), nodeID VARCHAR(255), jid VARCHAR(1024),
  affiliation VARCHAR(10) NOT NULL, PRIMARY KEY (serviceID, nodeID, jid));
CREATE TABLE ofPubsubItem (serviceID VARCHAR(100), nodeID VARCHAR(255), id VARCHAR(100),
  jid VARCHAR(1024) NOT NULL, creationDate CHAR(15) NOT NULL, payload LONGVARCHAR,
  PRIMARY KEY (serviceID, nodeID, id));
CREATE TABLE ofPubsubSubscription (
  serviceID VARCHAR(100), nodeID VARCHAR(255), id VARCHAR(100), jid VARCHAR(1024) NOT NULL,
  owner VARCHAR(1024) NOT NULL, state VARCHAR(15) NOT NULL, deliver INTEGER NOT NULL, digest INTEGER NOT NULL,
  digest_frequency INTEGER NOT NULL, expire CHAR(15), includeBody INTEGER NOT NULL, showValues VARCHAR(30),
  subscriptionType VARCHAR(10) NOT NULL, subscriptionDepth INTEGER NOT NULL, keyword VARCHAR(200),
  PRIMARY KEY (serviceID, nodeID, id));
CREATE TABLE ofPubsubDefaultConf (
  serviceID VARCHAR(100), leaf INTEGER, deliverPayloads INTEGER NOT NULL, maxPayloadSize INTEGER NOT NULL,
  persistItems INTEGER NOT NULL, maxItems INTEGER NOT NULL, notifyConfigChanges INTEGER NOT NULL,
  notifyDelete INTEGER NOT NULL, notifyRetract INTEGER NOT NULL, presenceBased INTEGER NOT NULL,
  sendItemSubscribe INTEGER NOT NULL, publisherModel VARCHAR(15) NOT NULL, subscriptionEnabled INTEGER NOT NULL,
  accessModel VARCHAR(10) NOT NULL, language VARCHAR(255), replyPolicy VARCHAR(15),
  associationPolicy VARCHAR(15) NOT NULL, maxLeafNodes INTEGER NOT NULL, PRIMARY KEY (serviceID, leaf));
