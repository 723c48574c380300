//! Media, contacts, group-send and shared pages over HTTP (contract:
//! docs/media.md).

use serde::{Deserialize, Serialize};

use super::messages::RecipientOutcome;

/// Content type of the message a group-send delivers ([`MediaMessage`]).
pub const MEDIA_MESSAGE_TYPE: &str = "application/vnd.herald.media+json";

/// `POST /v1/users/{uid}/uploads` body; every field may be left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRequest {
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub content_type: String,
    #[serde(default)]
    pub name: String,
}

/// `POST /v1/users/{uid}/uploads` answer (201): where to PUT the bytes and
/// the upload credential to present there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadTicket {
    pub upload_id: String,
    pub upload_url: String,
    pub credential: String,
    #[serde(default)]
    pub expires_at_ms: u64,
}

/// `PUT {upload_url}` answer (201): the stored media.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadDone {
    /// Hex SHA-256 of the stored bytes (after edit rules).
    pub media_id: String,
    pub size: u64,
    pub content_type: String,
    pub sha256: String,
    /// Nodes holding a replica.
    #[serde(default)]
    pub replicas: Vec<u64>,
    /// The node changed the bytes (edit rules), so `media_id` is not the
    /// hash of the file sent.
    #[serde(default)]
    pub edited: bool,
    /// The content was already stored; the uploader became an owner.
    #[serde(default)]
    pub duplicate: bool,
    /// `GET` it for [`MediaInfo`].
    #[serde(default)]
    pub link: String,
}

/// `GET /v1/media/{id}` answer: the media and a short-lived download URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaInfo {
    pub media_id: String,
    pub size: u64,
    pub content_type: String,
    #[serde(default)]
    pub created_ms: u64,
    /// Owners the viewer may know of: itself and its friends.
    #[serde(default)]
    pub owners: Vec<String>,
    #[serde(default)]
    pub replicas: Vec<u64>,
    /// Download URL carrying an access credential.
    pub url: String,
    /// When the credential in `url` expires.
    #[serde(default)]
    pub expires_at_ms: u64,
}

/// `POST /v1/users/{uid}/group-send` body. Unknown fields are refused; a
/// missing `idempotency_key` is empty and refused by the node as
/// `invalid_idempotency_key`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSendRequest {
    pub media_id: String,
    /// Text sent with the media (empty: none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub text: String,
    /// Empty = all contacts.
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub idempotency_key: String,
}

/// `POST /v1/users/{uid}/group-send` answer: one message to every recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSendAnswer {
    pub message_id: u64,
    pub media_id: String,
    /// Answered from an earlier submission with the same idempotency key:
    /// nothing was sent again.
    pub duplicate: bool,
    pub revision: u64,
    pub recipients: Vec<RecipientOutcome>,
}

/// The body of the message a group-send delivers (content type
/// [`MEDIA_MESSAGE_TYPE`]). Fields in alphabetical order: the order the
/// node writes them in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaMessage {
    pub content_type: String,
    /// The sender.
    pub from: String,
    /// `GET` it (as a recipient) for [`MediaInfo`].
    pub link: String,
    pub media_id: String,
    /// The sender's name of the file.
    #[serde(default)]
    pub name: String,
    pub size: u64,
    #[serde(default)]
    pub text: String,
    /// Always `media`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// `PUT /v1/users/{uid}/contacts/{contact}` body (an empty body is no
/// groups). Unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactBody {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// One contact of a user. Fields in alphabetical order: the order the node
/// writes them in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// The contact has the user as a contact too.
    #[serde(default)]
    pub friend: bool,
    #[serde(default)]
    pub groups: Vec<String>,
    pub uid: String,
}

/// `GET /v1/users/{uid}/contacts` answer. Fields in alphabetical order: the
/// order the node writes them in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactList {
    pub contacts: Vec<Contact>,
    pub uid: String,
}

/// The answer of `DELETE /v1/users/{uid}/contacts/{contact}` and `DELETE
/// /v1/users/{uid}/media/{id}`. Fields in alphabetical order: the order
/// the node writes them in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    /// False when there was nothing to remove.
    pub removed: bool,
    pub revision: u64,
}

/// One entry of a shared page. Fields in alphabetical order: the order the
/// node writes them in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedMedia {
    pub content_type: String,
    #[serde(default)]
    pub created_ms: u64,
    #[serde(default)]
    pub expires_at_ms: u64,
    pub media_id: String,
    #[serde(default)]
    pub name: String,
    pub size: u64,
    /// Download URL carrying an access credential for the viewer.
    pub url: String,
}

/// `GET /v1/users/{uid}/shared` answer (JSON form). Fields in alphabetical
/// order: the order the node writes them in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedPage {
    pub media: Vec<SharedMedia>,
    pub uid: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upload requests parse with every field defaulting; unknown fields
    /// are ignored (as the node always did); clients send all three.
    #[test]
    fn wire_media_upload_request() {
        let r: UploadRequest = serde_json::from_str(r#"{"x":1}"#).unwrap();
        assert_eq!(r, UploadRequest::default());
        let r = UploadRequest { size: 3, content_type: "video/mp4".into(), name: "clip".into() };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"size":3,"content_type":"video/mp4","name":"clip"}"#
        );
    }

    /// Group-send bodies: media id required, text, groups and key default
    /// (a missing key reaches the node's validation), unknown fields
    /// refused; an empty text is left out when sent.
    #[test]
    fn wire_media_group_send_request() {
        let r: GroupSendRequest = serde_json::from_str(r#"{"media_id":"m"}"#).unwrap();
        assert_eq!(r, GroupSendRequest { media_id: "m".into(), ..GroupSendRequest::default() });
        assert!(serde_json::from_str::<GroupSendRequest>(r#"{"text":"hi"}"#).is_err());
        assert!(serde_json::from_str::<GroupSendRequest>(r#"{"media_id":"m","to":["b"]}"#).is_err());
        assert!(
            serde_json::from_str::<GroupSendRequest>(r#"{"media_id":"m","text":null}"#).is_err()
        );
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"media_id":"m","groups":[],"idempotency_key":""}"#
        );
    }

    /// Contact bodies: `{}` is no groups, unknown fields are refused; an
    /// empty list is sent as `{}`.
    #[test]
    fn wire_media_contact_body() {
        assert_eq!(serde_json::from_str::<ContactBody>("{}").unwrap(), ContactBody::default());
        assert!(serde_json::from_str::<ContactBody>(r#"{"group":["a"]}"#).is_err());
        assert_eq!(serde_json::to_string(&ContactBody::default()).unwrap(), "{}");
        let b = ContactBody { groups: vec!["friends".into()] };
        assert_eq!(serde_json::to_string(&b).unwrap(), r#"{"groups":["friends"]}"#);
    }

    /// Every media answer as the node writes it parses and serializes back
    /// to the same bytes.
    #[test]
    fn wire_media_answers_round_trip() {
        fn same<T: serde::de::DeserializeOwned + Serialize>(node: &str) -> T {
            let v: T = serde_json::from_str(node).unwrap();
            assert_eq!(serde_json::to_string(&v).unwrap(), node);
            v
        }
        let t: UploadTicket = same(
            r#"{"upload_id":"u1","upload_url":"/v1/uploads/u1","credential":"c","expires_at_ms":5}"#,
        );
        assert_eq!(t.upload_url, "/v1/uploads/u1");
        let d: UploadDone = same(
            r#"{"media_id":"ab","size":3,"content_type":"image/png","sha256":"ab","replicas":[1,2],"edited":false,"duplicate":true,"link":"http://h/v1/media/ab"}"#,
        );
        assert!(d.duplicate);
        let i: MediaInfo = same(
            r#"{"media_id":"ab","size":3,"content_type":"image/png","created_ms":1,"owners":["alice"],"replicas":[1],"url":"/v1/media/ab/content?access=x","expires_at_ms":2}"#,
        );
        assert_eq!(i.owners, vec!["alice".to_string()]);
        let g: GroupSendAnswer = same(
            r#"{"message_id":17,"media_id":"ab","duplicate":false,"revision":88,"recipients":[{"uid":"bob","outcome":"delivered"}]}"#,
        );
        assert_eq!(g.recipients[0].uid, "bob");
        let l: ContactList = same(
            r#"{"contacts":[{"friend":true,"groups":["friends"],"uid":"bob"}],"uid":"alice"}"#,
        );
        assert!(l.contacts[0].friend);
        let r: Removed = same(r#"{"removed":true,"revision":43}"#);
        assert!(r.removed);
        let p: SharedPage = same(
            r#"{"media":[{"content_type":"image/jpeg","created_ms":1,"expires_at_ms":2,"media_id":"ab","name":"b.jpg","size":5,"url":"http://x/c?access=1"}],"uid":"bob"}"#,
        );
        assert_eq!(p.media[0].name, "b.jpg");
        let m: MediaMessage = same(
            r#"{"content_type":"image/png","from":"alice","link":"http://h/v1/media/ab","media_id":"ab","name":"a.png","size":3,"text":"hi","type":"media"}"#,
        );
        assert_eq!(m.kind, "media");
    }

    /// Answers with only their essential fields (as the client's tests and
    /// older nodes give them) parse, the rest defaulting.
    #[test]
    fn wire_media_answers_tolerate_missing_fields() {
        let i: MediaInfo = serde_json::from_str(
            r#"{"media_id":"ab","size":3,"content_type":"image/png","url":"/c?access=a1"}"#,
        )
        .unwrap();
        assert_eq!((i.created_ms, i.owners.len(), i.expires_at_ms), (0, 0, 0));
        let t: UploadTicket =
            serde_json::from_str(r#"{"upload_id":"u","upload_url":"/u","credential":"c"}"#)
                .unwrap();
        assert_eq!(t.expires_at_ms, 0);
        let c: Contact = serde_json::from_str(r#"{"uid":"bob"}"#).unwrap();
        assert_eq!((c.friend, c.groups.len()), (false, 0));
    }
}
