// A person using Element's own client stack (matrix-js-sdk with its Rust crypto) against the event bot, in an
// encrypted room. Driven by tests/test_bot_interop.py over stdin/stdout: lines starting with "@@" are JSON
// steps for the test, everything else is the SDK's own logging.
//
//   argv: homeserver URL, user id, access token, device id, room id
//   1. joins the room, prints {"step": "joined"}; the test's moderator then announces an event there
//   2. decrypts the bot's poll, votes "not going" in it, reacts ❔ to the announcement, sends "!going ID",
//      and decrypts the bot's reply (which must say which of the two answers counts)
//   3. prints {"step": "going", ...}; the test moves the bot's clock to the reminder, and the bot writes
//   4. joins the direct chat the bot opens, decrypts the reminder, prints {"step": "done", ...}; the test's
//      moderator then invites this person by Matrix id to an event for invitees only
//   5. decrypts the invitation in the direct chat, taps ✅ under it (a reaction, encrypted like everything
//      in that chat), prints {"step": "invited", ...}

import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";

const [baseUrl, userId, accessToken, deviceId, roomId] = process.argv.slice(2);
logger.setLevel("error");
const out = (o) => process.stdout.write("@@" + JSON.stringify(o) + "\n");
const fail = (msg) => {
    out({ step: "error", message: msg });
    process.exit(1);
};
setTimeout(() => fail("timed out"), 150_000).unref();

const client = sdk.createClient({ baseUrl, userId, accessToken, deviceId });
await client.initRustCrypto({ useIndexedDB: false });
client.on(sdk.RoomMemberEvent.Membership, (_event, member) => {
    // The bot's direct chat: accept the invitation, as a person does in Element.
    if (member.userId === userId && member.membership === "invite") client.joinRoom(member.roomId).catch(() => {});
});
const prepared = new Promise((resolve) =>
    client.on(sdk.ClientEvent.Sync, (state) => state === "PREPARED" && resolve()),
);
await client.startClient({ initialSyncLimit: 20 });
await prepared;
await client.joinRoom(roomId);
out({ step: "joined", device: client.getDeviceId() });

// Every event of every room, decrypted where it can be (a room key may arrive after its message).
async function events(inRoom) {
    const all = [];
    for (const room of client.getRooms()) {
        if (inRoom && room.roomId !== inRoom) continue;
        for (const ev of room.getLiveTimeline().getEvents()) {
            if (ev.isEncrypted() && ev.isDecryptionFailure()) await ev.attemptDecryption(client.getCrypto(), { isRetry: true });
            else if (ev.isEncrypted() && !ev.getClearContent()) await client.decryptEventIfNeeded(ev);
            all.push(ev);
        }
    }
    return all;
}
async function waitFor(what, find, inRoom) {
    for (;;) {
        const hit = (await events(inRoom)).find(find);
        if (hit) return hit;
        await new Promise((r) => setTimeout(r, 250));
    }
}
const fromBot = (ev) => ev.getSender() !== userId && ev.getSender()?.includes("bot");
const body = (ev) => ev.getContent()?.body ?? "";

const poll = await waitFor("poll", (ev) => fromBot(ev) && ev.getType() === "m.poll.start", roomId);
const pollContent = poll.getContent();
const question = pollContent["org.matrix.msc3381.poll.start"].question["org.matrix.msc1767.text"];
const eventId = question.slice(question.lastIndexOf("[") + 1, question.lastIndexOf("]"));
const announcement = await waitFor("announcement", (ev) => fromBot(ev) && body(ev).startsWith("📅"), roomId);

// As Element sends them: the MSC3381 response, a reaction, a command.
await client.sendEvent(roomId, "org.matrix.msc3381.poll.response", {
    "m.relates_to": { rel_type: "m.reference", event_id: poll.getId() },
    "org.matrix.msc3381.poll.response": { answers: ["not_going"] },
});
await client.sendEvent(roomId, "m.reaction", {
    "m.relates_to": { rel_type: "m.annotation", event_id: announcement.getId(), key: "❔" },
});
await new Promise((r) => setTimeout(r, 1500)); // the vote and the reaction are handled before the command
const command = await client.sendTextMessage(roomId, `!going ${eventId}`);
const reply = await waitFor(
    "reply",
    (ev) => fromBot(ev) && ev.getContent()?.["m.relates_to"]?.["m.in_reply_to"]?.event_id === command.event_id,
    roomId,
);
out({ step: "going", event: eventId, question, reply: body(reply), announcement: body(announcement) });

const reminder = await waitFor(
    "reminder",
    (ev) => fromBot(ev) && ev.getRoomId() !== roomId && body(ev).includes("Reminder"),
);
out({ step: "done", reminder: body(reminder), encrypted: reminder.isEncrypted(), room: reminder.getRoomId() });

const invitation = await waitFor(
    "invitation",
    (ev) => fromBot(ev) && ev.getRoomId() !== roomId && body(ev).includes("You are invited"),
);
// The bot's own ✅ is there to tap; tapping it in Element sends this.
const offered = await waitFor(
    "the bot's reactions",
    (ev) => fromBot(ev) && ev.getType() === "m.reaction" && ev.getContent()?.["m.relates_to"]?.event_id === invitation.getId(),
    invitation.getRoomId(),
);
const tap = await client.sendEvent(invitation.getRoomId(), "m.reaction", {
    "m.relates_to": { rel_type: "m.annotation", event_id: invitation.getId(), key: "✅" },
});
const dmRoom = client.getRoom(invitation.getRoomId());
out({
    step: "invited",
    invitation: body(invitation),
    encrypted: invitation.isEncrypted(),
    room: invitation.getRoomId(),
    offered: offered.getContent()["m.relates_to"].key,
    roomEncrypted: Boolean(dmRoom?.hasEncryptionStateEvent()),
    tap: tap.event_id,
});
client.stopClient();
process.exit(0);
